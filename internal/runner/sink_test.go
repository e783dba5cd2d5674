package runner_test

import (
	"fmt"
	"sync"

	"github.com/projectord/projectord/internal/store"
)

// recordingSink records applied events; failOn makes chosen events poison.
type recordingSink struct {
	mu      sync.Mutex
	applied []store.Event
	failOn  func(e *store.Event) error
	// failBatch fails a whole batch with an error that names no event, as a
	// deferred constraint failing at commit or a batch out of time does.
	failBatch func(events []store.Event) error
	calls     int
}

func (s *recordingSink) Apply(events []store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failBatch != nil {
		if err := s.failBatch(events); err != nil {
			return err
		}
	}
	if s.failOn != nil {
		for i := range events {
			if err := s.failOn(&events[i]); err != nil {
				return &store.ApplyError{Index: i, Err: err}
			}
		}
	}
	for _, e := range events {
		e.Data = append([]byte(nil), e.Data...)
		s.applied = append(s.applied, e)
	}
	return nil
}

func (s *recordingSink) positions() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, len(s.applied))
	for i, e := range s.applied {
		out[i] = e.Position
	}
	return out
}

func (s *recordingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.applied)
}

// duplicates returns positions applied more than once.
func (s *recordingSink) duplicates() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[int64]bool{}
	var dup []int64
	for _, e := range s.applied {
		if seen[e.Position] {
			dup = append(dup, e.Position)
		}
		seen[e.Position] = true
	}
	return dup
}

func poisonAt(pos int64) func(e *store.Event) error {
	return func(e *store.Event) error {
		if e.Position == pos {
			return fmt.Errorf("poison at %d", pos)
		}
		return nil
	}
}
