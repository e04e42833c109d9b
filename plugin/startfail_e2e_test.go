package plugin_test

// A start failure says why (issue 18.3): the error carries the tail of the
// instance's own lxc.log, not only LXD's "forkstart … exit status 1".
// Through the real runner-host binary, sshd and LXD daemon.

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// failingStartProfile creates, in the default project (the e2e project
// uses its profiles), a profile whose pre-start hook exits 1: LXD accepts
// it at create, and liblxc fails the start, saying so in lxc.log.
func (x *e2eEnv) failingStartProfile(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("pikaci-startfail-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := x.d.Do(ctx, http.MethodPost, "/1.0/profiles", map[string]any{
		"name":   name,
		"config": map[string]string{"raw.lxc": "lxc.hook.pre-start = /bin/false"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := x.d.Do(ctx, http.MethodDelete, "/1.0/profiles/"+url.PathEscape(name), nil); err != nil {
			t.Errorf("delete profile %s: %v", name, err)
		}
	})
	return name
}

func TestOperator_AStartFailureShowsTheTailOfTheInstancesLog(t *testing.T) {
	x := newE2E(t)
	profile := x.failingStartProfile(t)
	j := x.job(t, "hash-startfail", "true", func(j *shared.WholeJob) { j.Runtime.Profiles = []string{profile} })
	code, _, stderr := x.run(t, j)
	if code != 125 {
		t.Errorf("exit code %d, want 125", code)
	}
	rec := e2eRecord(t, j.jobDir)
	for _, w := range []string{"lxc.log of instance " + j.instance + " ends with:", "pre-start"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q", w)
		}
		if !strings.Contains(rec.Error, w) {
			t.Errorf("record's error lacks %q", w)
		}
	}
	if rec.Failure != host.FailureSystem || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("record failure %q cleanup %+v; want a system failure and the instance deleted", rec.Failure, rec.Cleanup)
	}
	x.gone(t, j.instance)
}
