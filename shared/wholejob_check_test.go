package shared

import "testing"

func TestFullWholeJobPassesCheck(t *testing.T) {
	if err := fullWholeJob().Check(); err != nil {
		t.Fatalf("full job: %v", err)
	}
}

func TestCheckMemoryAccepts(t *testing.T) {
	for _, v := range []string{"4GiB", "512MiB", "1073741824", "1048576B", "2GB", "2000kB", "1MiB", "7EiB", "9223372036854775807", "50%", "100%"} {
		if err := CheckMemory("m", v); err != nil {
			t.Errorf("CheckMemory(%q): %v", v, err)
		}
	}
}
