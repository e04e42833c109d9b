package incusfake

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/pikaci/vmexec/shared"
)

// The faults WithFault can put in front of the API, for the safety cases
// (docs/case-format.md).
const (
	// FaultEndlessAnswer answers every GET with 200 and a JSON body that
	// never ends: a plugin must bound what it reads.
	FaultEndlessAnswer = "endless-answer"
	// FaultHangOnUpdate stops answering at the first update of an
	// instance (PUT or PATCH /1.0/instances/NAME): that request and every
	// one after it are read and never answered, and the update is not
	// applied. A plugin must bound the wait and say that the update may
	// have been applied.
	FaultHangOnUpdate = "hang-on-update"
)

// Faults lists the faults WithFault knows.
var Faults = []string{FaultEndlessAnswer, FaultHangOnUpdate}

// endlessPrefix opens the endless answer: the start of a sync envelope
// whose metadata never closes.
const endlessPrefix = `{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"padding":"`

// Faulty is an API handler with a fault in front of it.
type Faulty struct {
	next  http.Handler
	fault string
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	healed  bool // Heal was called: every request goes through
	hanging bool // the update arrived: nothing is answered any more
	endless int  // endless answers begun
}

// WithFault puts fault in front of next. Close releases every request it
// holds.
func WithFault(next http.Handler, fault string) (*Faulty, error) {
	if !slices.Contains(Faults, fault) {
		return nil, shared.Errorf(shared.ErrInvalidInput, "fault", fault,
			"incusfake: unknown fault %s: want one of %s", shared.Show(fault), strings.Join(Faults, ", "))
	}
	return &Faulty{next: next, fault: fault, done: make(chan struct{})}, nil
}

// Hanging reports whether the update arrived (FaultHangOnUpdate).
func (f *Faulty) Hanging() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hanging
}

// EndlessAnswers is how many endless answers were begun.
func (f *Faulty) EndlessAnswers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.endless
}

// Heal ends the fault: requests from now on are answered as without it
// (those held are cut), as a server that came back.
func (f *Faulty) Heal() {
	f.mu.Lock()
	f.healed = true
	f.mu.Unlock()
	f.Close()
}

// Close releases the requests held: their connections are cut.
func (f *Faulty) Close() { f.once.Do(func() { close(f.done) }) }

func (f *Faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	healed := f.healed
	f.mu.Unlock()
	if healed {
		f.next.ServeHTTP(w, r)
		return
	}
	switch f.fault {
	case FaultEndlessAnswer:
		if r.Method == http.MethodGet && !isWebsocket(r) {
			f.answerEndlessly(w, r)
			return
		}
	case FaultHangOnUpdate:
		f.mu.Lock()
		if isInstanceUpdate(r) {
			f.hanging = true
		}
		hang := f.hanging
		f.mu.Unlock()
		if hang {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20)) // received, then silence
			select {
			case <-r.Context().Done():
			case <-f.done:
			}
			panic(http.ErrAbortHandler) // cut the connection, answer nothing
		}
	}
	f.next.ServeHTTP(w, r)
}

func isWebsocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// isInstanceUpdate: PUT or PATCH /1.0/instances/NAME itself (not its
// state, files or exec).
func isInstanceUpdate(r *http.Request) bool {
	if r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return false
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/1.0/instances/")
	return ok && name != "" && !strings.Contains(name, "/")
}

func (f *Faulty) answerEndlessly(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.endless++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, endlessPrefix); err != nil {
		return
	}
	chunk := []byte(strings.Repeat("a", 32<<10))
	for {
		select {
		case <-r.Context().Done():
			return
		case <-f.done:
			panic(http.ErrAbortHandler)
		default:
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}
