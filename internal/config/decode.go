package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

var durationType = reflect.TypeFor[time.Duration]()

// decodeStrict decodes the merged settings into cfg: strictly (a key
// without a field is an error, although conform has dropped every such key
// already), through decodeHook, and weakly typed only where the hook lets
// it (a single value where a list is expected).
func decodeStrict(settings map[string]any, cfg *Config) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.DecodeHookFuncValue(decodeHook),
		ErrorUnused:      true,
		WeaklyTypedInput: true,
		Result:           cfg,
	})
	if err != nil {
		return err
	}
	return dec.Decode(settings)
}

// decodeHook converts and checks scalar values before mapstructure's weak
// typing sees them. Weak typing alone would read `poll_interval: 50` as 50ns,
// `max_conns: true` as 1 and `max_conns: 4294967304` as 8 (int32
// wrap-around); each of those is an error here instead. Messages never
// repeat the value: a misplaced password must not end up in a log.
func decodeHook(from, to reflect.Value) (any, error) {
	data := from.Interface()
	t := to.Type()
	switch {
	case t == durationType:
		return toDuration(data)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return toInt(data, t)
	case t.Kind() == reflect.Bool:
		return toBool(data)
	case t.Kind() == reflect.String:
		return toString(data)
	case deref(t).Kind() == reflect.Struct, t.Kind() == reflect.Map:
		if k := from.Kind(); k != reflect.Map && k != reflect.Struct {
			return nil, fmt.Errorf("must be a mapping, not %s", describe(data))
		}
	case t.Kind() == reflect.Slice:
		if from.Kind() == reflect.Map {
			return nil, errors.New("must be a list, not a mapping")
		}
	}
	return data, nil
}

// kindError is a value of the wrong kind for a numeric field. Its message
// is completed with the field's range where the path is known (see
// decodeProblems), so that `batch_size: abc` names 1 to 10000, not the
// range of an int64.
type kindError struct {
	want   string // "a duration such as ...", "a whole number"
	detail string // ": a bare number has no unit", ", not a list"
	bits   int    // for whole numbers: the size of the Go integer type
}

func (e *kindError) Error() string { return e.message(nil) }

func (e *kindError) message(l *limit) string {
	msg := "must be " + e.want
	switch {
	case l != nil && l.duration:
		msg += ", between " + l.String()
	case l != nil:
		msg += " between " + l.String()
	case e.bits > 0:
		lo, hi := int64(math.MinInt64)>>(64-e.bits), int64(math.MaxInt64)>>(64-e.bits)
		msg += fmt.Sprintf(" between %d and %d", lo, hi)
	}
	return msg + e.detail
}

func toDuration(data any) (any, error) {
	const want = `a duration such as "50ms", "5s" or "1m"`
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, &kindError{want: want}
		}
		return d, nil
	}
	if n, ok := number(data); ok {
		if n == 0 {
			return time.Duration(0), nil
		}
		return nil, &kindError{want: want, detail: ": a bare number has no unit"}
	}
	return nil, &kindError{want: want, detail: ", not " + describe(data)}
}

func toInt(data any, t reflect.Type) (any, error) {
	want := &kindError{want: "a whole number", bits: t.Bits()}
	var n int64
	switch v := data.(type) {
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, want
		}
		n = i
	case bool:
		want.detail = ", not true or false"
		return nil, want
	default:
		f, ok := number(data)
		if !ok {
			want.detail = ", not " + describe(data)
			return nil, want
		}
		if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
			return nil, want
		}
		n = int64(f)
		if i, ok := exactInt(data); ok {
			n = i
		}
	}
	if reflect.Zero(t).OverflowInt(n) {
		return nil, want
	}
	return n, nil
}

func toBool(data any) (any, error) {
	switch v := data.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err == nil {
			return b, nil
		}
	}
	return nil, errors.New("must be true or false")
}

func toString(data any) (any, error) {
	switch v := data.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	if v := reflect.ValueOf(data); v.Kind() == reflect.String {
		return v.String(), nil // a named string type (runner.Then)
	}
	if i, ok := exactInt(data); ok {
		return strconv.FormatInt(i, 10), nil
	}
	if f, ok := number(data); ok {
		return strconv.FormatFloat(f, 'f', -1, 64), nil
	}
	return nil, fmt.Errorf("must be a string, not %s", describe(data))
}

// number returns a numeric value of any integer or float kind as a float64.
func number(data any) (float64, bool) {
	v := reflect.ValueOf(data)
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(v.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(v.Uint()), true
	case reflect.Float32, reflect.Float64:
		return v.Float(), true
	}
	return 0, false
}

// exactInt returns an integer value without the rounding of float64.
func exactInt(data any) (int64, bool) {
	v := reflect.ValueOf(data)
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if v.Uint() <= math.MaxInt64 {
			return int64(v.Uint()), true
		}
	}
	return 0, false
}

// describe names the YAML kind of a decoded value, for error messages.
func describe(data any) string {
	if data == nil {
		return "null"
	}
	if _, ok := data.(time.Duration); ok {
		return "a duration"
	}
	switch reflect.TypeOf(data).Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return reflect.TypeOf(data).String()
}

// decodeProblems turns a mapstructure error tree into one Problem per
// failing field, each with its path.
func decodeProblems(err error) []Problem {
	var out []Problem
	var walk func(error)
	walk = func(err error) {
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range joined.Unwrap() {
				walk(e)
			}
			return
		}
		de, ok := err.(*mapstructure.DecodeError)
		if !ok {
			// Decode wraps the whole tree once ("decoding failed due to ...").
			if inner := errors.Unwrap(err); inner != nil {
				walk(inner)
				return
			}
			out = append(out, Problem{Message: err.Error()})
			return
		}
		inner := de.Unwrap()
		if inner == nil {
			out = append(out, Problem{Path: de.Name(), Message: "is invalid"})
			return
		}
		out = append(out, Problem{Path: de.Name(), Message: decodeMessage(de.Name(), inner)})
	}
	walk(err)
	return out
}

// decodeMessage words mapstructure's own errors without the values they
// carry. The hook above catches most mistakes first.
func decodeMessage(path string, err error) string {
	var ke *kindError
	if errors.As(err, &ke) {
		if l, ok := limitAt(path); ok {
			return ke.message(&l)
		}
		return ke.message(nil)
	}
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("must be %s, not %s", describeType(ute.Expected.Type()), describe(ute.Value))
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("must be %s", describeType(pe.Expected.Type()))
	}
	return err.Error()
}

func describeType(t reflect.Type) string {
	switch deref(t).Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return describe(reflect.Zero(t).Interface())
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_*-]+$`)

// joinPath appends key to a decode path, quoting keys that would make the
// path ambiguous or unreadable.
func joinPath(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
