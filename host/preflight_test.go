package host

import (
	"strings"
	"testing"
)

func TestAMissingSnapshotMarkerSaysWhatTheFolderMustHoldAndHowToMakeIt(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadSnapshotHash(dir, "abc123")
	if err == nil {
		t.Fatal("no error for a folder without a marker")
	}
	for _, want := range []string{"pikaci-snapshot.json", "content_hash", `echo '{"content_hash": "abc123"}' > ` + dir + "/pikaci-snapshot.json"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
