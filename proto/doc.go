// Package proto holds no Go code: it is where the protocol definitions a
// plugin in another language compiles from live beside
// shared/executorpb/executor.proto (README.md). Its test keeps the copies of
// go-plugin's services equal to the go-plugin version go.mod pins.
package proto
