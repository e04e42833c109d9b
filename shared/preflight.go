package shared

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// Preflighter is the optional preflight of a JobExecutor: it checks, in a
// few seconds and changing nothing, what the job needs of its remote host.
// A failed check is a Check with OK false, not an error; the error is for
// input that cannot be checked at all.
type Preflighter interface {
	Preflight(ctx context.Context, req PreflightRequest) (PreflightResult, error)
}

// ErrNoPreflight is what a plugin without a preflight answers.
var ErrNoPreflight = errors.New("the plugin has no preflight")

// PreflightRequest asks what a job needs of its remote host.
type PreflightRequest struct {
	Job WholeJob
}

// PreflightResult holds the checks in the order they ran; a check that
// could not run because an earlier one failed is left out.
type PreflightResult struct {
	Checks []Check
}

// Check is one preflight check.
type Check struct {
	// Name says what was checked.
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail is what was found (for a failed check, the error).
	Detail string `json:"detail,omitempty"`
	// Fix, for a failed check, is what to do about it.
	Fix string `json:"fix,omitempty"`
}

// Failed returns the first failed check, or nil.
func (r PreflightResult) Failed() *Check {
	for i := range r.Checks {
		if !r.Checks[i].OK {
			return &r.Checks[i]
		}
	}
	return nil
}

// Preflight implements executorpb.WholeJobServer: the Impl's preflight
// when it has one, UNIMPLEMENTED otherwise.
func (s *GRPCJobServer) Preflight(ctx context.Context, req *executorpb.PreflightRequest) (*executorpb.PreflightResult, error) {
	p, ok := s.Impl.(Preflighter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, ErrNoPreflight.Error())
	}
	res, err := p.Preflight(ctx, PreflightRequest{Job: wholeJobFromProto(req.GetJob())})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &executorpb.PreflightResult{}
	for _, c := range res.Checks {
		out.Checks = append(out.Checks, &executorpb.PreflightCheck{Name: c.Name, Ok: c.OK, Detail: c.Detail, Fix: c.Fix})
	}
	return out, nil
}

// Preflight calls the plugin's preflight; ErrNoPreflight when it has none.
func (c *GRPCJobClient) Preflight(ctx context.Context, req PreflightRequest) (PreflightResult, error) {
	resp, err := c.job.Preflight(ctx, &executorpb.PreflightRequest{Job: wholeJobToProto(req.Job)})
	if status.Code(err) == codes.Unimplemented {
		return PreflightResult{}, ErrNoPreflight
	}
	if err != nil {
		return PreflightResult{}, fromStatus("Preflight", err)
	}
	var res PreflightResult
	for _, c := range resp.GetChecks() {
		res.Checks = append(res.Checks, Check{Name: c.GetName(), OK: c.GetOk(), Detail: c.GetDetail(), Fix: c.GetFix()})
	}
	return res, nil
}
