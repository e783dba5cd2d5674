package coord

// Queued is how many requests wait for the session goroutine.
func (s *Session) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}
