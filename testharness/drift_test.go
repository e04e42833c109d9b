package testharness

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// publishedCases is where the contract's published copy of its public cases
// sits beside a clone of this repository. PIKACI_CONTRACT_CASES names
// another folder.
const publishedCases = "../../shared/conformance/cases"

// TestPublicCasesMatchTheContract: testdata/cases/public holds the
// contract's public cases byte for byte, no more and no fewer. When the
// contract publishes new or changed cases, this fails and says how to
// refresh the copy.
func TestPublicCasesMatchTheContract(t *testing.T) {
	dir, shown := os.Getenv("PIKACI_CONTRACT_CASES"), os.Getenv("PIKACI_CONTRACT_CASES")
	if dir == "" {
		// As a person at the repository's root would name it.
		dir, shown = publishedCases, "../shared/conformance/cases"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("the contract's published cases are not beside this clone (%s): nothing to compare with", dir)
	}
	const ours = "testdata/cases/public"
	want := readFlat(t, dir)
	got := readFlat(t, ours)
	refresh := "refresh from the repository's root with: rm testharness/" + ours + "/*.txtar && cp " + filepath.Join(shown, "*.txtar") + " testharness/" + ours + "/"
	if d := cmp.Diff(names(want), names(got)); d != "" {
		t.Fatalf("public cases differ from the contract's (-published +ours):\n%s\n%s", d, refresh)
	}
	for name, data := range want {
		if !bytes.Equal(data, got[name]) {
			t.Errorf("%s differs from the contract's published copy; %s", name, refresh)
		}
	}
}

func readFlat(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no cases in %s (%v)", dir, err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = data
	}
	return out
}

func names(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
