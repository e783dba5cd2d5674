package runner

// Free is how many events of the budget are not held, for the external
// tests (package runner_test, which use the memory backend of
// internal/runner/memtest) that check every batch gave its share back. It
// exists in test builds only.
func (b *Budget) Free() int { return b.free() }
