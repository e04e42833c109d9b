package sshpool_test

import (
	"strconv"

	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/internal/sshdtest"
)

func itoa(i int) string { return strconv.Itoa(i) }

func marshal(k gossh.PublicKey) []byte { return gossh.MarshalAuthorizedKey(k) }

func fingerprint(s *sshdtest.Server) string { return gossh.FingerprintSHA256(s.HostKeyPublic) }

func fingerprintOf(k gossh.PublicKey) string { return gossh.FingerprintSHA256(k) }
