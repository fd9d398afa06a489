package web

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
)

// The revocations that keep failing, as the revokers report them: the
// FailingRevocations of each revoker instance's Status on the services
// API ($SRV.STATS.jit-revoker), which is what jitctl status reads too. No
// bucket changes while a revocation fails (its lease stays as it was), so
// the console asks: every failingPoll while a live page is open (the hub
// has started), and on a page's load when what it holds is older than
// failingFresh. A change of the list (a grant, or its last error) is a
// live update like any other.
const (
	failingPoll  = 2 * time.Second
	failingFresh = 3 * time.Second
	// failingWait bounds one asking; the revokers answer together, so it
	// ends failingQuiet after the last answer.
	failingWait  = time.Second
	failingQuiet = 100 * time.Millisecond
)

// revokerService is the revokers' micro service name.
const revokerService = "jit-revoker"

// failing holds the last report of failing revocations.
type failing struct {
	w *Console

	once sync.Once
	done chan struct{} // closed when poll returns

	mu   sync.Mutex
	list []metrics.FailingRevocation
	// at is when list was read; zero: never. The process's clock, not the
	// console's: it ages a cache, not a grant.
	at time.Time
}

func newFailing(w *Console) *failing { return &failing{w: w, done: make(chan struct{})} }

// current returns the failing revocations, oldest first, asking the
// revokers first if what is held is not fresh.
func (f *failing) current(ctx context.Context) []metrics.FailingRevocation {
	f.mu.Lock()
	list, fresh := f.list, !f.at.IsZero() && time.Since(f.at) < failingFresh
	f.mu.Unlock()
	if fresh {
		return list
	}
	return f.refresh(ctx)
}

// refresh asks the revokers, keeps their answer, signals the live pages if
// it changed, and returns it. A revoker that does not answer is left out:
// its failing revocations show again once it answers (jitctl status says
// which services run).
func (f *failing) refresh(ctx context.Context) []metrics.FailingRevocation {
	stats, err := service.Stats(ctx, f.w.d.NC, revokerService, failingWait, failingQuiet)
	if err != nil {
		if ctx.Err() == nil {
			f.w.log.Warn().Err(err).Msg("console: ask the revokers for failing revocations")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.list
	}
	list := []metrics.FailingRevocation{}
	for _, s := range stats {
		st := service.StatusIn(s)
		if st == nil {
			continue
		}
		for _, fr := range st.FailingRevocations {
			// Every revoker instance tries every due revocation: one entry
			// a grant, the oldest.
			i := slices.IndexFunc(list, func(x metrics.FailingRevocation) bool { return x.GrantID == fr.GrantID })
			switch {
			case i < 0:
				list = append(list, fr)
			case fr.Since.Before(list[i].Since):
				list[i] = fr
			}
		}
	}
	slices.SortFunc(list, func(a, b metrics.FailingRevocation) int { return a.Since.Compare(b.Since) })
	f.mu.Lock()
	changed := !slices.EqualFunc(f.list, list, sameFailure)
	f.list, f.at = list, time.Now()
	f.mu.Unlock()
	if changed {
		f.w.hub.signal()
	}
	return list
}

// sameFailure says whether a and b show the same on a page (the attempts
// and the time of the last try change every second and are not shown).
func sameFailure(a, b metrics.FailingRevocation) bool {
	return a.GrantID == b.GrantID && a.Agent == b.Agent && a.Reason == b.Reason && a.Since.Equal(b.Since) && a.LastError == b.LastError
}

// start polls the revokers every failingPoll until ctx ends (the console
// closes). Later calls do nothing.
func (f *failing) start(ctx context.Context) {
	f.once.Do(func() { go f.poll(ctx) })
}

func (f *failing) poll(ctx context.Context) {
	defer close(f.done)
	t := time.NewTicker(failingPoll)
	defer t.Stop()
	for {
		f.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// wait returns once poll has returned; at once if it never started.
func (f *failing) wait() {
	started := true
	f.once.Do(func() { started = false; close(f.done) })
	if started {
		<-f.done
	}
}
