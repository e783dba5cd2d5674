package store

// UncheckedSQLSink builds a sink whose handlers skip compileHandler's
// refusals, to show what PostgreSQL does with a handler that slipped past
// them. Handlers take no parameters.
func UncheckedSQLSink(handlers map[string]string) *SQLSink {
	s := &SQLSink{handlers: map[string]*statement{}}
	for t, sql := range handlers {
		s.handlers[t] = &statement{key: t, sql: sql}
	}
	return s
}
