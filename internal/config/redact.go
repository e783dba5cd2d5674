package config

import (
	"bytes"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// redactedMask replaces every password; pgx uses the same.
const redactedMask = "xxxxx"

// RedactURL returns dsn with every password replaced by "xxxxx": the
// password of a URL's user info, password and sslpassword query parameters,
// and password/sslpassword values of a keyword/value DSN, quoted or not.
// A URL's password is taken to run from the first ":" after the scheme to
// the last "@": exact for a well-formed URL, and generous, never leaking, for
// a malformed one whose password holds an unescaped "/", "?", "#" or "@" (an
// "@" in a query value gets masked along with the host).
func RedactURL(dsn string) string {
	out, _ := redact(dsn)
	return out
}

var (
	urlSchemeRe = regexp.MustCompile(`^\s*[A-Za-z][A-Za-z0-9+.-]*://`)
	// kvPasswordRe matches a password keyword and its value in a libpq
	// keyword/value string: quoted with backslash escapes (possibly
	// unterminated), or unquoted up to the next space. A missing "=" is
	// tolerated, since a malformed string is exactly what ends up in an
	// error message.
	kvPasswordRe = regexp.MustCompile(`(?is)(?:^|\s)(?:ssl)?password(?:\s*=\s*|\s+)('(?:\\.|[^'\\])*(?:'|\\)?|(?:\\.|[^\s\\])*\\?)`)
)

// redact returns dsn redacted and the original text of every masked span.
func redact(dsn string) (string, []string) {
	var spans [][2]int
	if m := urlSchemeRe.FindStringIndex(dsn); m != nil {
		spans = urlSecretSpans(dsn, m[1])
	} else {
		for _, m := range kvPasswordRe.FindAllStringSubmatchIndex(dsn, -1) {
			if m[3] > m[2] {
				spans = append(spans, [2]int{m[2], m[3]})
			}
		}
	}
	if len(spans) == 0 {
		return dsn, nil
	}
	// Overlapping spans become one, so that each secret is masked once.
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	merged := spans[:1]
	for _, s := range spans[1:] {
		if last := &merged[len(merged)-1]; s[0] <= last[1] {
			last[1] = max(last[1], s[1])
		} else {
			merged = append(merged, s)
		}
	}
	var b strings.Builder
	var secrets []string
	pos := 0
	for _, s := range merged {
		b.WriteString(dsn[pos:s[0]])
		b.WriteString(redactedMask)
		secrets = append(secrets, dsn[s[0]:s[1]])
		pos = s[1]
	}
	b.WriteString(dsn[pos:])
	return b.String(), secrets
}

// urlSecretSpans finds the password positions of a URL whose authority
// starts at offset start.
func urlSecretSpans(dsn string, start int) [][2]int {
	p := dsn[start:]
	var spans [][2]int

	// The password runs from the first ":" to the "@" that ends the user
	// info. That "@" is taken to be the last one in the string: a password
	// holding an unescaped "/", "?" or "#" strands its "@" past where the
	// host should start (pgx and net/url even disagree on where the user info
	// ends), and such a password cannot be told apart from an "@" in a query
	// value. Over-masking the latter is the price of never leaking the former.
	if at := strings.LastIndexByte(p, '@'); at >= 0 {
		if c := strings.IndexByte(p[:at], ':'); c >= 0 {
			spans = append(spans, [2]int{start + c + 1, start + at})
		}
	}

	// Query parameters: a pair starts after "?" or "&" and its value runs
	// to the next "&". They are looked for everywhere, not only after the
	// user info: in a malformed URL the query may hold the last "@".
	for i := range len(p) {
		if p[i] != '?' && p[i] != '&' {
			continue
		}
		pair := p[i+1:]
		if j := strings.IndexByte(pair, '&'); j >= 0 {
			pair = pair[:j]
		}
		key, val, ok := strings.Cut(pair, "=")
		if ok && val != "" && isPasswordKey(key) {
			vs := start + i + 1 + len(key) + 1
			spans = append(spans, [2]int{vs, vs + len(val)})
		}
	}
	return spans
}

func isPasswordKey(raw string) bool {
	k, err := url.QueryUnescape(raw)
	if err != nil {
		k = raw
	}
	k = strings.ToLower(strings.TrimSpace(k))
	return k == "password" || k == "sslpassword"
}

// scrubSecrets removes from msg every password that dsn contains, in the
// spellings a parser might echo: as written, URL-decoded and unquoted.
func scrubSecrets(msg, dsn string) string {
	redacted, secrets := redact(dsn)
	if dsn != "" {
		msg = strings.ReplaceAll(msg, dsn, redacted)
	}
	var variants []string
	for _, s := range secrets {
		variants = append(variants, s)
		if u, err := url.PathUnescape(s); err == nil {
			variants = append(variants, u)
		}
		if u, err := url.QueryUnescape(s); err == nil {
			variants = append(variants, u)
		}
		variants = append(variants, kvUnquote(s))
	}
	// Longest first, so that a shorter variant cannot split a longer one.
	sort.Slice(variants, func(i, j int) bool { return len(variants[i]) > len(variants[j]) })
	for _, v := range variants {
		if v != "" {
			msg = strings.ReplaceAll(msg, v, redactedMask)
		}
	}
	return msg
}

// kvUnquote undoes libpq keyword/value quoting and escaping.
func kvUnquote(s string) string {
	s = strings.TrimPrefix(s, "'")
	s = strings.TrimSuffix(s, "'")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Redacted returns a deep copy of c with the password of every connection
// string masked: database.url, coordination.url and each SQL sink's
// target_url. `config print` shows this.
func (c *Config) Redacted() *Config {
	r := c.clone()
	r.Database.URL = RedactURL(r.Database.URL)
	r.Coordination.URL = RedactURL(r.Coordination.URL)
	for i := range r.Projectors {
		if s := r.Projectors[i].Sink.SQL; s != nil {
			s.TargetURL = RedactURL(s.TargetURL)
		}
		if h := r.Projectors[i].Sink.HTTP; h != nil {
			h.URL = RedactURL(h.URL)
		}
	}
	return r
}

// clone returns a deep copy of c.
func (c *Config) clone() *Config {
	r := *c
	if c.Projectors != nil {
		r.Projectors = make([]Projector, len(c.Projectors))
		for i, p := range c.Projectors {
			if p.EventTypes != nil {
				p.EventTypes = append([]string{}, p.EventTypes...)
			}
			if p.Sink.SQL != nil {
				s := *p.Sink.SQL
				if s.Handlers != nil {
					s.Handlers = make(map[string]string, len(p.Sink.SQL.Handlers))
					for k, v := range p.Sink.SQL.Handlers {
						s.Handlers[k] = v
					}
				}
				p.Sink.SQL = &s
			}
			if p.Sink.HTTP != nil {
				h := *p.Sink.HTTP
				p.Sink.HTTP = &h
			}
			r.Projectors[i] = p
		}
	}
	return &r
}

// YAML renders the redacted configuration as a config file Load accepts:
// snake_case keys in declaration order, durations as strings like "50ms".
func (c *Config) YAML() ([]byte, error) {
	n, err := yamlNode(reflect.ValueOf(c.Redacted()).Elem())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("error encoding config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("error encoding config: %w", err)
	}
	return buf.Bytes(), nil
}

func yamlNode(v reflect.Value) (*yaml.Node, error) {
	if v.Type() == durationType {
		return scalarNode(time.Duration(v.Int()).String())
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return scalarNode(nil)
		}
		return yamlNode(v.Elem())
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		for i := range v.NumField() {
			name := tagName(v.Type().Field(i))
			f := v.Field(i)
			if name == "" || (f.Kind() == reflect.Pointer && f.IsNil()) {
				continue
			}
			val, err := yamlNode(f)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, val)
		}
		return n, nil
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		for i := range v.Len() {
			val, err := yamlNode(v.Index(i))
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, val)
		}
		return n, nil
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			kn, err := scalarNode(k.String())
			if err != nil {
				return nil, err
			}
			val, err := yamlNode(v.MapIndex(k))
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, kn, val)
		}
		return n, nil
	}
	return scalarNode(v.Interface())
}

func scalarNode(v any) (*yaml.Node, error) {
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return nil, fmt.Errorf("error encoding config value: %w", err)
	}
	return n, nil
}
