package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// param is an event field a handler can bind by name.
type param struct {
	name, sqlType string
	value         func(e *Event) any
}

// params are the named parameters of SQL handlers. Each carries its type
// as an explicit cast, so `@data->>'id'` resolves without casts by the user.
var params = []param{
	{"position", "bigint", func(e *Event) any { return e.Position }},
	{"transaction_id", "xid8", func(e *Event) any { return e.XID }},
	{"stream_id", "text", func(e *Event) any { return e.StreamID }},
	{"stream_version", "bigint", func(e *Event) any { return e.StreamVersion }},
	{"event_type", "text", func(e *Event) any { return e.Type }},
	{"data", "jsonb", func(e *Event) any { return jsonArg(e.Data) }},
	{"metadata", "jsonb", func(e *Event) any { return jsonArg(e.Metadata) }},
	{"created_at", "timestamptz", func(e *Event) any { return e.CreatedAt }},
	{"event_id", "text", func(e *Event) any {
		if e.EventID == "" {
			return nil
		}
		return e.EventID
	}},
}

// jsonArg passes raw JSON through unchanged; nil becomes SQL NULL.
func jsonArg(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// ParamNames lists the parameter names a handler may use, for docs and errors.
func ParamNames() []string {
	out := make([]string, len(params))
	for i, p := range params {
		out[i] = "@" + p.name
	}
	return out
}

// statement is one compiled handler.
type statement struct {
	key    string // the handler's event type, or "*"
	sql    string
	fields []*param
}

func (s *statement) args(e *Event) []any {
	out := make([]any, len(s.fields))
	for i, f := range s.fields {
		out[i] = f.value(e)
	}
	return out
}

// SQLSink runs one statement per event, chosen by event type, with event
// fields bound as typed parameters (never spliced into SQL text).
type SQLSink struct {
	handlers    map[string]*statement
	fallback    *statement // "*"
	reset       string
	fingerprint string
}

// CompileSQLSink checks and compiles handler SQL. Errors name the event type.
func CompileSQLSink(handlers map[string]string, reset string) (*SQLSink, error) {
	s := &SQLSink{handlers: map[string]*statement{}, reset: reset}
	types := make([]string, 0, len(handlers))
	for t := range handlers {
		types = append(types, t)
	}
	sort.Strings(types)
	var problems []string
	for _, t := range types {
		st, err := compileHandler(handlers[t])
		if err != nil {
			problems = append(problems, fmt.Sprintf("handlers[%s]: %v", t, err))
			continue
		}
		st.key = t
		if t == "*" {
			s.fallback = st
		} else {
			s.handlers[t] = st
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	h := sha256.New()
	for _, t := range types {
		// Length-prefixed, so no two handler sets write the same bytes.
		fmt.Fprintf(h, "%d:%s%d:%s", len(t), t, len(handlers[t]), handlers[t])
	}
	s.fingerprint = "sql:" + hex.EncodeToString(h.Sum(nil))[:16]
	return s, nil
}

// Fingerprint identifies the sink's handlers (not its reset SQL): a halt
// recorded under one fingerprint is ended by a claim under another, that
// is by a replica whose handlers were changed.
func (s *SQLSink) Fingerprint() string { return s.fingerprint }

// HandledTypes returns the event types a statement runs for, sorted; all is
// true when a "*" handler takes every type.
func (s *SQLSink) HandledTypes() (types []string, all bool) {
	if s.fallback != nil {
		return nil, true
	}
	types = make([]string, 0, len(s.handlers))
	for t := range s.handlers {
		types = append(types, t)
	}
	sort.Strings(types)
	return types, false
}

// Reset returns the SQL that empties the read model, or "".
func (s *SQLSink) Reset() string { return s.reset }

// Statements returns every compiled statement keyed by event type, for
// preparing them against a database (`config validate --check-db`).
func (s *SQLSink) Statements() map[string]string {
	out := map[string]string{}
	for t, st := range s.handlers {
		out[t] = st.sql
	}
	if s.fallback != nil {
		out["*"] = s.fallback.sql
	}
	return out
}

func (s *SQLSink) handler(eventType string) *statement {
	if st, ok := s.handlers[eventType]; ok {
		return st
	}
	return s.fallback
}

// Handles reports whether an event of this type runs a statement.
func (s *SQLSink) Handles(eventType string) bool { return s.handler(eventType) != nil }

// queue adds each event's statement to b and returns, for every queued
// query, the index of the event it belongs to. Events with no handler are
// skipped (the checkpoint still moves past them).
func (s *SQLSink) queue(b *pgx.Batch, events []Event, owner []int) []int {
	for i := range events {
		st := s.handler(events[i].Type)
		if st == nil {
			continue
		}
		b.Queue(st.sql, st.args(&events[i])...)
		owner = append(owner, i)
	}
	return owner
}

var txControl = []string{"begin", "commit", "rollback", "abort", "start", "end", "savepoint", "release", "prepare", "set", "reset"}

// checkTxControl refuses a handler that could end the batch's transaction.
// A handler is one statement (more after ';' is refused below), so plain
// transaction control can only be its first word, comments aside; this is
// the only guard against it, since PostgreSQL obeys a plain COMMIT even in
// the middle of the batch. A DO block is refused when its body COMMITs or
// ROLLs BACK: PostgreSQL would refuse that inside the batch's explicit
// transaction anyway (2D000), but a config error is clearer than a halt at
// run time. CALL stays allowed: a procedure that tries to end the
// transaction gets the same 2D000 when it runs (see README).
func checkTxControl(src string) error {
	var first string
	var err error
	lex(src, func(kind tokenKind, text string) bool {
		if first == "" {
			if kind != tokenWord {
				return false
			}
			first = strings.ToLower(text)
			for _, kw := range txControl {
				if first == kw {
					err = fmt.Errorf("%q statements are not allowed: the batch's transaction is projectord's", strings.ToUpper(kw))
					return false
				}
			}
			return first == "do"
		}
		if kind != tokenString {
			return true // DO [LANGUAGE name] 'body'
		}
		lex(text, func(kind tokenKind, word string) bool {
			if w := strings.ToUpper(word); kind == tokenWord && (w == "COMMIT" || w == "ROLLBACK") {
				err = fmt.Errorf("a DO block may not %s: the batch's transaction is projectord's", w)
				return false
			}
			return true
		})
		return false
	})
	return err
}

type tokenKind int

const (
	tokenWord   tokenKind = iota // a keyword or unquoted identifier
	tokenString                  // a string constant, quoted or dollar-quoted; text is its value
	tokenOther                   // a quoted identifier, number, operator or punctuation
)

// lex calls f with each token of s, skipping whitespace and comments, until
// f returns false. It knows just enough SQL to tell code from text.
func lex(s string, f func(kind tokenKind, text string) bool) {
	for i := 0; i < len(s); {
		c := s[i]
		var kind tokenKind
		var text string
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			i = lineCommentEnd(s, i)
			continue
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
			continue
		case c == '\'':
			j := skipQuoted(s, i, c)
			kind, text = tokenString, unquote(s[i:j], eStringAt(s, i))
			i = j
		case c == '$' && (i == 0 || !identByte(s[i-1])):
			j := skipDollarQuoted(s, i)
			if j == i+1 {
				kind, text = tokenOther, "$"
			} else {
				tag := strings.IndexByte(s[i+1:], '$') + 2
				kind, text = tokenString, s[i+tag:max(i+tag, j-tag)]
			}
			i = j
		case isIdentStart(c) || c >= 0x80:
			j := i + 1
			for j < len(s) && (isIdent(s[j]) || s[j] >= 0x80) {
				j++
			}
			if j < len(s) && s[j] == '\'' && j == i+1 && (c == 'E' || c == 'e') {
				i = j // E'...': the string follows
				continue
			}
			kind, text = tokenWord, s[i:j]
			i = j
		case c == '"':
			j := skipQuoted(s, i, c)
			kind, text = tokenOther, s[i:j]
			i = j
		default:
			kind, text = tokenOther, s[i:i+1]
			i++
		}
		if !f(kind, text) {
			return
		}
	}
}

// unquote returns the value of the string constant q ('...' or, with
// escapes, E'...'), approximately: good enough to read code out of it.
func unquote(q string, escapes bool) string {
	q = strings.TrimPrefix(q, "'")
	q = strings.TrimSuffix(q, "'")
	if escapes {
		q = strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(q)
	}
	return strings.ReplaceAll(q, "''", "'")
}

// compileHandler rewrites @name parameters into typed positional ones,
// leaving string literals, quoted identifiers, comments and operators
// such as @> and @@ alone.
func compileHandler(src string) (*statement, error) {
	trimmed := strings.TrimSpace(src)
	if trimmed == "" {
		return nil, fmt.Errorf("empty statement")
	}
	if err := checkTxControl(src); err != nil {
		return nil, err
	}
	var b strings.Builder
	st := &statement{}
	index := map[string]int{}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			j := skipQuoted(src, i, c)
			b.WriteString(src[i:j])
			i = j
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			j := lineCommentEnd(src, i)
			b.WriteString(src[i:j])
			i = j
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			j := skipBlockComment(src, i)
			b.WriteString(src[i:j])
			i = j
		case c == '$' && (i == 0 || !identByte(src[i-1])):
			j := skipDollarQuoted(src, i)
			b.WriteString(src[i:j])
			i = j
		case c == ';':
			if strings.TrimSpace(stripComments(src[i+1:])) != "" {
				return nil, fmt.Errorf("one statement per handler: found more after ';'")
			}
			i = len(src)
		case c == '@' && i+1 < len(src) && isIdentStart(src[i+1]) && (i == 0 || !identByte(src[i-1])):
			j := i + 1
			for j < len(src) && isIdent(src[j]) {
				j++
			}
			name := src[i+1 : j]
			p := lookupParam(name)
			if p == nil {
				return nil, fmt.Errorf("unknown parameter @%s (known: %s)", name, strings.Join(ParamNames(), ", "))
			}
			n, ok := index[name]
			if !ok {
				st.fields = append(st.fields, p)
				n = len(st.fields)
				index[name] = n
			}
			fmt.Fprintf(&b, "($%d::%s)", n, p.sqlType)
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	st.sql = b.String()
	return st, nil
}

func lookupParam(name string) *param {
	for i := range params {
		if params[i].name == name {
			return &params[i]
		}
	}
	return nil
}

func isIdentStart(c byte) bool { return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdent(c byte) bool      { return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$' }

// identByte reports whether c continues an identifier for PostgreSQL, whose
// identifiers (and dollar-quote tags) also take every byte from 0x80 up.
func identByte(c byte) bool { return isIdent(c) || c >= 0x80 }

// eStringAt reports whether the quote at i opens an escape string (E'...'): an E that
// begins a token right before it. In name'...' (a typed literal) or
// somE'...' the E ends an identifier, and the string is a standard one.
func eStringAt(s string, i int) bool {
	if i == 0 || (s[i-1] != 'E' && s[i-1] != 'e') {
		return false
	}
	j := i - 1
	for j > 0 && identByte(s[j-1]) {
		j--
	}
	// Only the digits of a number may precede the E in the same run (the
	// lexer gives 1E'x' back as 1 and E'x').
	for k := j; k < i-1; k++ {
		if s[k] < '0' || s[k] > '9' {
			return false
		}
	}
	return true
}

// skipQuoted returns the index after the literal or identifier opened at i.
// Doubled quotes escape; backslashes escape only in escape strings (E'...').
func skipQuoted(s string, i int, q byte) int {
	escapes := q == '\'' && eStringAt(s, i)
	for j := i + 1; j < len(s); j++ {
		switch {
		case escapes && s[j] == '\\':
			j++
		case s[j] == q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(s)
}

func skipBlockComment(s string, i int) int {
	depth := 0
	for j := i; j+1 < len(s); j++ {
		switch {
		case s[j] == '/' && s[j+1] == '*':
			depth++
			j++
		case s[j] == '*' && s[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}

// skipDollarQuoted skips $tag$...$tag$; a lone $ (as in $1) is copied.
func skipDollarQuoted(s string, i int) int {
	j := i + 1
	for j < len(s) && s[j] != '$' && identByte(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != '$' || (j > i+1 && s[i+1] >= '0' && s[i+1] <= '9') {
		return i + 1
	}
	tag := s[i : j+1]
	end := strings.Index(s[j+1:], tag)
	if end < 0 {
		return len(s)
	}
	return j + 1 + end + len(tag)
}

// lineCommentEnd returns the end of the -- comment at i: PostgreSQL ends
// it at a carriage return as well as at a newline.
func lineCommentEnd(s string, i int) int {
	if j := strings.IndexAny(s[i:], "\n\r"); j >= 0 {
		return i + j
	}
	return len(s)
}

func stripComments(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case s[i] == '-' && i+1 < len(s) && s[i+1] == '-':
			i = lineCommentEnd(s, i)
		case s[i] == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// ErrBadHandler means a handler's SQL fails for every event alike:
// PostgreSQL refuses to parse or plan it, or it tries to end the batch's
// transaction. It is a configuration error, never an event's fault.
var ErrBadHandler = errors.New("handler SQL fails for every event")

// StatementProblem is a handler that PostgreSQL rejected. As an error it
// matches ErrBadHandler.
type StatementProblem struct {
	EventType string
	Err       error
}

func (p StatementProblem) Error() string     { return fmt.Sprintf("handler %s: %v", p.EventType, p.Err) }
func (p StatementProblem) Unwrap() error     { return p.Err }
func (p StatementProblem) Is(err error) bool { return err == ErrBadHandler }

// statementProblems are every handler of a sink PostgreSQL rejected, as one error.
type statementProblems []StatementProblem

func (ps statementProblems) Error() string {
	msgs := make([]string, len(ps))
	for i, p := range ps {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "; ")
}

func (ps statementProblems) Unwrap() []error {
	out := make([]error, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

// Check prepares and plans every handler (and the reset SQL) on a
// connection of pool without running them, so unknown tables, columns and
// functions, type errors and errors in constant expressions surface before
// the first event does. Problems are what PostgreSQL refused; err is a
// failure to check at all (connection, timeout).
func (s *SQLSink) Check(ctx context.Context, pool *pgxpool.Pool) ([]StatementProblem, error) {
	return s.check(ctx, pool, true)
}

// CheckSink checks s's handlers on the target as Check does, bounded by the
// target's timeout, before a leader applies anything: a handler that fails
// for every event alike must stop the projector, not be charged to the
// first event. It returns an error matching ErrBadHandler that names every
// refused handler, or another error when the check itself failed (worth
// retrying). The reset SQL is left out: only `projectord reset` runs it.
func (t *Target) CheckSink(ctx context.Context, s *SQLSink) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	problems, err := s.check(ctx, t.pool, false)
	if err != nil {
		return fmt.Errorf("error checking handlers: %w", err)
	}
	if len(problems) > 0 {
		return statementProblems(problems)
	}
	return nil
}

func (s *SQLSink) check(ctx context.Context, pool *pgxpool.Pool, withReset bool) ([]StatementProblem, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error connecting: %w", err)
	}
	defer conn.Release()
	stmts := s.Statements()
	types := make([]string, 0, len(stmts))
	for t := range stmts {
		types = append(types, t)
	}
	sort.Strings(types)
	if withReset && s.reset != "" {
		types, stmts["reset"] = append(types, "reset"), s.reset
	}
	// The number of parameters each handler binds, so a statement that
	// PostgreSQL reads with another number (the compiler took a literal or
	// comment for code, or code for one) is refused here: binding it fails
	// client-side for every event alike. -1 (the reset SQL): not checked.
	binds := map[string]int{"reset": -1}
	for t, st := range s.handlers {
		binds[t] = len(st.fields)
	}
	if s.fallback != nil {
		binds["*"] = len(s.fallback.fields)
	}
	var out []StatementProblem
	for _, t := range types {
		problem, err := checkStatement(ctx, conn.Conn(), stmts[t], binds[t])
		if err != nil {
			return nil, err
		}
		if problem != nil {
			out = append(out, StatementProblem{EventType: t, Err: problem})
		}
	}
	return out, nil
}

// checkName is the prepared statement checkStatement plans.
const checkName = "projectord_check"

// checkStatement makes PostgreSQL parse, analyse and plan sql as it would
// for an event, without running it: prepared under a name, then EXPLAINed
// as a generic plan with every parameter NULL, in a transaction it rolls
// back. A generic plan never looks at parameter values but still folds
// constant expressions, so `'abc'::text::int` fails here as it would for
// every event. problem is PostgreSQL's refusal of the statement; err is any
// other failure.
func checkStatement(ctx context.Context, conn *pgx.Conn, sql string, binds int) (problem, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	prepared := false
	defer func() {
		if rbErr := tx.Rollback(ctx); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) && err == nil {
			problem, err = nil, rbErr
		}
		if prepared {
			if dErr := conn.Deallocate(ctx, checkName); dErr != nil {
				// Never leave the name behind on a pooled connection: the
				// next check on it would fail to prepare.
				_ = conn.Close(ctx)
				if err == nil {
					problem, err = nil, dErr
				}
			}
		}
	}()
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan", pgx.QueryExecModeSimpleProtocol); err != nil {
		return nil, err
	}
	sd, err := conn.Prepare(ctx, checkName, sql)
	if err != nil {
		return refusal(err)
	}
	prepared = true
	if binds >= 0 && len(sd.ParamOIDs) != binds {
		return fmt.Errorf("PostgreSQL reads %d parameters in this statement where projectord binds %d: "+
			"a @name inside a string, quoted identifier or comment was taken for code, or the reverse", len(sd.ParamOIDs), binds), nil
	}
	explain := "EXPLAIN EXECUTE " + checkName
	if n := len(sd.ParamOIDs); n > 0 {
		explain += "(" + strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ") + ")"
	}
	if _, err := tx.Exec(ctx, explain, pgx.QueryExecModeSimpleProtocol); err != nil {
		return refusal(err)
	}
	return nil, nil
}

// refusal sorts an error of checkStatement: PostgreSQL refusing the
// statement, or a failure worth retrying.
func refusal(err error) (problem, other error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && Classify(err) != ClassTransient && Classify(err) != ClassTimeout {
		return err, nil
	}
	return nil, err
}
