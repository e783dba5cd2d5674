package coord

// StopSignalled is closed once Stop has asked the session to stop, before
// the session has drained its in-flight query and released its locks.
func StopSignalled(s *Session) <-chan struct{} { return s.stopped }
