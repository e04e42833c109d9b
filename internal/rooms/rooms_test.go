package rooms

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// module is our module path; rules name folders relative to it.
const module = "github.com/pikaci/vmexec"

// rule is one room rule: no package in from (a folder and everything
// below it, relative to the module root; "." is every package) may link,
// directly or through others, a package in any folder of deny, unless that
// package is in allow.
type rule struct {
	name string
	from []string
	// tests: the rule holds for the packages' tests too (what `go test`
	// links), not only for what their non-test code links.
	tests bool
	// except are folders of from the rule does not hold for.
	except []string
	deny   []string
	allow  []string
}

// The rules, as the README's "Room rules" states them.
var rules = []rule{
	{
		name:  "the runner links no harness, none of our plugin and no test fixture",
		from:  []string{"host"},
		deny:  []string{"testharness", "plugin", "internal"},
		allow: []string{"internal/regfile"},
	},
	{
		name:  "the harness links none of our plugin, not even in its tests",
		from:  []string{"testharness"},
		tests: true,
		deny:  []string{"plugin"},
	},
	{
		name:  "shared imports neither side",
		from:  []string{"shared"},
		tests: true,
		deny:  []string{"host", "plugin", "testharness"},
	},
	{
		name: "shared links no test fixture",
		from: []string{"shared"},
		deny: []string{"internal"},
	},
	{
		name:  "the plugin links neither the host nor the harness nor a test fixture",
		from:  []string{"plugin"},
		deny:  []string{"host", "testharness", "internal"},
		allow: []string{"internal/regfile"},
	},
	{
		name:   "plugin/internal stays inside plugin",
		from:   []string{"."},
		except: []string{"plugin"},
		tests:  true,
		deny:   []string{"plugin/internal"},
	},
	{
		name:   "internal/ is test fixtures only: no code outside it links one",
		from:   []string{"."},
		except: []string{"internal"},
		deny:   []string{"internal"},
		allow:  []string{"internal/regfile"},
	},
	{
		name:  "test fixtures link nothing of ours but the contract",
		from:  []string{"internal"},
		tests: true,
		deny:  []string{"host", "plugin", "testharness"},
	},
}

// pkg is what `go list -json` says of a package that we use.
type pkg struct {
	ImportPath string
	ForTest    string
	Imports    []string
	Module     *struct{ Path string }
}

// graph maps each package, test variants included ("p [p.test]", "p_test
// [p.test]", "p.test"), to what it imports.
type graph map[string][]string

// listGraph runs `go list -deps -test -json` on every package of ours.
func listGraph(t *testing.T) graph {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("find the go command: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goCmd, "list", "-deps", "-test", "-json=ImportPath,ForTest,Imports,Module", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := graph{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		g[p.ImportPath] = p.Imports
	}
	return g
}

// base is a package's import path without its test variant's suffix.
func base(path string) string {
	path, _, _ = strings.Cut(path, " ")
	return strings.TrimSuffix(strings.TrimSuffix(path, ".test"), "_test")
}

// in reports whether the package path (an import path of ours) is in one
// of the module-relative folders.
func in(path string, folders []string) bool {
	rel, ok := strings.CutPrefix(base(path), module)
	if !ok || (rel != "" && rel[0] != '/') {
		return false
	}
	rel = strings.TrimPrefix(rel, "/")
	for _, f := range folders {
		if f == "." || rel == f || strings.HasPrefix(rel, f+"/") {
			return true
		}
	}
	return false
}

// isTest reports whether a node of the graph is a test variant or a test
// main.
func isTest(path string) bool {
	return strings.Contains(path, " [") || strings.HasSuffix(path, ".test") || strings.HasSuffix(path, "_test")
}

// violations returns, for each package the rule's packages link that the
// rule denies, one import chain that links it, sorted.
func (r rule) violations(g graph) []string {
	var starts []string
	for p := range g {
		if !in(p, r.from) || in(p, r.except) || (isTest(p) && !r.tests) {
			continue
		}
		starts = append(starts, p)
	}
	slices.Sort(starts)
	var out []string
	seen := map[string]bool{}
	for _, s := range starts {
		// Breadth first, so that the chain printed is a shortest one.
		parent := map[string]string{s: ""}
		queue := []string{s}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			if p != s && in(p, r.deny) && !in(p, r.allow) {
				if !seen[base(s)+" "+base(p)] {
					seen[base(s)+" "+base(p)] = true
					out = append(out, chain(parent, p))
				}
				continue
			}
			for _, imp := range g[p] {
				if _, ok := parent[imp]; !ok {
					parent[imp] = p
					queue = append(queue, imp)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// chain is the import chain from the start to p, module prefix left out.
func chain(parent map[string]string, p string) string {
	var links []string
	for ; p != ""; p = parent[p] {
		links = append(links, strings.ReplaceAll(p, module+"/", ""))
	}
	slices.Reverse(links)
	return strings.Join(links, " → ")
}

// TestRoomRules checks every rule against the real import graph.
func TestRoomRules(t *testing.T) {
	g := listGraph(t)
	// A graph without our packages would pass every rule.
	for _, p := range []string{"host/cmd/runner-host", "testharness", "shared", "plugin", "plugin/internal/sshpool", "internal/sshdtest"} {
		if _, ok := g[module+"/"+p]; !ok {
			t.Fatalf("go list did not list %s", p)
		}
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			for _, v := range r.violations(g) {
				t.Errorf("forbidden import chain: %s", v)
			}
		})
	}
}

// TestRoomRulesReportTheChain: a rule broken through other packages is
// reported with the chain of imports that breaks it, for a test variant
// only when the rule covers tests, and an allowed package is not.
func TestRoomRulesReportTheChain(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	g := graph{
		m("host/cmd/runner-host"):          {"fmt", m("host")},
		m("host"):                          {m("shared"), m("internal/regfile")},
		m("shared"):                        {m("testharness/cases")},
		m("testharness/cases"):             {m("shared/strictjson")},
		m("internal/regfile"):              nil,
		m("host [" + m("host.test") + "]"): {m("internal/testbin")},
		m("testharness"):                   {m("host")},
		m("testharness_test [" + m("testharness.test") + "]"):              {m("testharness"), m("plugin/internal/sshpool")},
		m("plugin/internal/sshpool"):                                       {m("shared")},
		m("shared/strictjson"):                                             nil,
		m("internal/testbin"):                                              nil,
		m("plugin/internal/brokenplugin"):                                  {m("plugin/internal/sshpool")},
		m("testharness/remotefs [" + m("testharness/remotefs.test") + "]"): nil,
	}
	got := map[string][]string{}
	for _, r := range rules {
		if v := r.violations(g); len(v) > 0 {
			got[r.name] = v
		}
	}
	want := map[string][]string{
		rules[0].name: {
			"host → shared → testharness/cases",
			"host/cmd/runner-host → host → shared → testharness/cases",
		},
		rules[1].name: {"testharness_test [" + m("testharness.test") + "] → plugin/internal/sshpool"},
		rules[2].name: {"shared → testharness/cases"},
		rules[4].name: {
			"plugin/internal/brokenplugin → plugin/internal/sshpool → shared → testharness/cases",
			"plugin/internal/sshpool → shared → testharness/cases",
		},
		rules[5].name: {"testharness_test [" + m("testharness.test") + "] → plugin/internal/sshpool"},
	}
	for k, v := range want {
		for i := range v {
			v[i] = strings.ReplaceAll(v[i], module+"/", "")
		}
		want[k] = v
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("violations (-want +got):\n%s", d)
	}
}
