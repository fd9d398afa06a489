package revoker

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// job is one unit of revoker work: a revocation, or a check that may lead to
// one. A job that fails is retried with a growing delay until it succeeds.
type job struct {
	// key names the job in the timer heap (at most one timer per key) and in
	// logs: a grant key for revocations, prefixed for checks.
	key     string
	attempt uint64
	run     func(ctx context.Context) error
}

// scheduler runs jobs at a time with one goroutine, one time.Timer and a
// min-heap, however many grants are live, and hands due jobs to a fixed pool
// of workers through an unbounded ready queue, so that scheduling never
// blocks the caller (the lease watch must never stall).
type scheduler struct {
	now func() time.Time

	mu    sync.Mutex
	cond  *sync.Cond // signals workers: ready has work, or stopped
	heap  timerHeap
	byKey map[string]*timerItem
	ready []job
	// due holds jobs whose timer fired: workers take them before ready, so
	// that a backlog of queued checks (100,000 leases arriving at once)
	// never delays a revocation that is due now.
	due     []job
	stopped bool

	wake chan struct{} // the heap's head changed
	quit chan struct{}
	wg   sync.WaitGroup
}

type timerItem struct {
	at    time.Time
	job   job
	index int
}

type timerHeap []*timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	it := x.(*timerItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}

func newScheduler(now func() time.Time) *scheduler {
	s := &scheduler{
		now:   now,
		byKey: make(map[string]*timerItem),
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// start runs the timer loop and the given number of workers, each calling
// exec for one job at a time.
func (s *scheduler) start(workers int, exec func(job)) {
	s.wg.Add(1)
	go s.loop()
	for range workers {
		s.wg.Add(1)
		go s.worker(exec)
	}
}

// stop ends the loop and the workers after the jobs they are running, and
// drops the rest: they are rebuilt from the leases bucket at the next start.
func (s *scheduler) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
	close(s.quit)
	s.wg.Wait()
}

// schedule runs j at time at. There is at most one timer per j.key: an
// earlier one is kept (whatever runs first decides), a later one is moved
// earlier.
func (s *scheduler) schedule(at time.Time, j job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if it, ok := s.byKey[j.key]; ok {
		if !at.Before(it.at) {
			return
		}
		it.at, it.job = at, j
		heap.Fix(&s.heap, it.index)
	} else {
		it := &timerItem{at: at, job: j}
		heap.Push(&s.heap, it)
		s.byKey[j.key] = it
	}
	if s.heap[0].job.key == j.key {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// enqueue runs j as soon as a worker is free.
func (s *scheduler) enqueue(j job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.ready = append(s.ready, j)
	s.cond.Signal()
}

// cancel drops the timer of key, if any. A job already handed to a worker
// still runs (and finds nothing to do).
func (s *scheduler) cancel(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.byKey[key]; ok {
		heap.Remove(&s.heap, it.index)
		delete(s.byKey, key)
	}
}

// pending reports how many timers are set (for tests and logs).
func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap)
}

func (s *scheduler) loop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		now := s.now()
		due := 0
		for len(s.heap) > 0 && !s.heap[0].at.After(now) {
			it := heap.Pop(&s.heap).(*timerItem)
			delete(s.byKey, it.job.key)
			s.due = append(s.due, it.job)
			due++
		}
		switch {
		case due == 1:
			s.cond.Signal()
		case due > 1:
			s.cond.Broadcast()
		}
		next := time.Hour
		if len(s.heap) > 0 {
			next = s.heap[0].at.Sub(now)
		}
		s.mu.Unlock()
		// Since Go 1.23 Reset discards a stale expiry: no drain needed.
		t.Reset(next)
		select {
		case <-s.quit:
			return
		case <-s.wake:
		case <-t.C:
		}
	}
}

func (s *scheduler) worker(exec func(job)) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		for len(s.due) == 0 && len(s.ready) == 0 && !s.stopped {
			s.cond.Wait()
		}
		if s.stopped {
			s.mu.Unlock()
			return
		}
		var j job
		if len(s.due) > 0 {
			j = pop(&s.due)
		} else {
			j = pop(&s.ready)
		}
		s.mu.Unlock()
		exec(j)
	}
}

// pop takes the first job of a non-empty queue.
func pop(q *[]job) job {
	j := (*q)[0]
	(*q)[0] = job{}
	*q = (*q)[1:]
	if len(*q) == 0 {
		*q = nil // let a drained burst's backing array go
	}
	return j
}
