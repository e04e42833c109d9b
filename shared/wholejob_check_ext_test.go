package shared_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/sharedtest"
)

// TestWholeJobCheckRefusesNamingTheFieldAndValue runs the contract's check
// table (sharedtest.CheckCases), which executors' tests run as well.
func TestWholeJobCheckRefusesNamingTheFieldAndValue(t *testing.T) {
	for _, tt := range sharedtest.CheckCases() {
		t.Run(tt.Name, func(t *testing.T) {
			err := tt.Job().Check()
			if !tt.Refused() {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Fatalf("error %v, want ErrInvalidInput", err)
			}
			e, _ := errors.AsType[*shared.Error](err)
			if e == nil || e.Field != tt.Field || e.Value != tt.Value {
				t.Errorf("error %#v, want field %q value %q", err, tt.Field, tt.Value)
			}
			if !strings.Contains(err.Error(), tt.Field) {
				t.Errorf("error %q does not name %s", err, tt.Field)
			}
			if tt.Value != "" && !strings.Contains(err.Error(), strings.Trim(shared.Show(tt.Value), `"`)) {
				t.Errorf("error %q does not show the value %q", err, tt.Value)
			}
		})
	}
}

// TestInstanceTypeRuleIsTheInstanceTypesTable: the rule follows the table,
// so narrowing it (as TestPluginRefusesWhatSharedRefuses's rule change
// does) changes what Check refuses.
func TestInstanceTypeRuleIsTheInstanceTypesTable(t *testing.T) {
	w := sharedtest.ValidWholeJob()
	w.Runtime.InstanceType = shared.InstanceTypeContainer
	if err := w.Check(); err != nil {
		t.Fatalf("container refused: %v", err)
	}
	old := shared.InstanceTypes
	shared.InstanceTypes = []string{shared.InstanceTypeVirtualMachine}
	t.Cleanup(func() { shared.InstanceTypes = old })
	err := w.Check()
	if e, _ := errors.AsType[*shared.Error](err); e == nil || e.Field != "runtime.instance_type" || e.Value != "container" {
		t.Fatalf("with only virtual machines allowed: error %v, want runtime.instance_type \"container\"", err)
	}
	if !strings.Contains(err.Error(), `"virtual-machine"`) {
		t.Errorf("error %q does not list the accepted type", err)
	}
}

// A job whose encoded message would pass gRPC's 4 MiB limit is refused
// naming its largest field, before anything changed; not a bare
// ResourceExhausted from the first call that carries it.
func TestWholeJobCheckRefusesAJobOverTheMessageLimit(t *testing.T) {
	w := sharedtest.ValidWholeJob()
	w.Job.ID = "job"
	w.Host.JobDir = "/tmp/run/jobs/job"
	w.Remote = shared.Remote{Host: "h", WorkDir: "/w"}
	for i := range 1200 {
		w.Host.StagedPayloads = append(w.Host.StagedPayloads, shared.StagedPayload{
			Name: fmt.Sprintf("p%d", i), LocalDir: "/tmp/run/jobs/job/" + strings.Repeat("d", 3800) + fmt.Sprint(i)})
	}
	err := w.Check()
	if !errors.Is(err, shared.ErrInvalidInput) {
		t.Fatalf("error %v, want ErrInvalidInput", err)
	}
	e, _ := errors.AsType[*shared.Error](err)
	if e == nil || e.Field != "host.staged_payloads" || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("error %v: want one naming host.staged_payloads and the limit", err)
	}
	w.Host.StagedPayloads = w.Host.StagedPayloads[:10]
	if err := w.Check(); err != nil {
		t.Errorf("a job well under the limit: %v", err)
	}
}
