package incusfake

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestWithFaultRefusesAnUnknownFault(t *testing.T) {
	_, err := WithFault(http.NotFoundHandler(), "hang-forever")
	if err == nil || !strings.Contains(err.Error(), `"hang-forever"`) {
		t.Fatalf("err %v, want one naming the fault", err)
	}
}

// TestEndlessAnswerNeverEnds: a GET's body goes on past any sane cap and
// starts as a sync envelope; other methods reach the API.
func TestEndlessAnswerNeverEnds(t *testing.T) {
	f, err := WithFault(New(Options{}), FaultEndlessAnswer)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	defer f.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/1.0", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	const limit = 8 << 20
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil || len(data) != limit {
		t.Fatalf("read %d bytes (%v); want the body to go on past %d", len(data), err, limit)
	}
	if !strings.HasPrefix(string(data), `{"type":"sync"`) {
		t.Errorf("body starts %q", data[:40])
	}
	if f.EndlessAnswers() != 1 {
		t.Errorf("%d endless answers, want 1", f.EndlessAnswers())
	}
	post, err := srv.Client().Post(srv.URL+"/1.0/instances", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusBadRequest {
		t.Errorf("POST answered %d, want the API's 400 for a bad body", post.StatusCode)
	}
}

// TestHangOnUpdateStopsAnswering: reads pass until the update; the update
// and every request after it get no answer until Heal, which cuts them.
func TestHangOnUpdateStopsAnswering(t *testing.T) {
	inc := New(Options{})
	inc.AddInstance("default", "c1", "container", nil)
	f, err := WithFault(inc, FaultHangOnUpdate)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	defer f.Close()
	get := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/1.0/instances/c1", nil)
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(10 * time.Second); err != nil {
		t.Fatalf("GET before the update: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, srv.URL+"/1.0/instances/c1", strings.NewReader(`{"devices":{}}`))
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the update was answered (%d)", resp.StatusCode)
	}
	if !f.Hanging() {
		t.Error("Hanging() is false after the update")
	}
	if err := get(500 * time.Millisecond); err == nil {
		t.Error("a GET after the update was answered")
	}
	f.Heal()
	if err := get(10 * time.Second); err != nil {
		t.Errorf("GET after Heal: %v", err)
	}
}
