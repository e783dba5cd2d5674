package httpsink

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"os"
	"strings"
)

// reserved are the headers projectord sets itself: a headers_file may not
// replace them, or a receiver could no longer trust what they say.
var reserved = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Host": true, "Transfer-Encoding": true,
	"Webhook-Id": true, "Webhook-Timestamp": true, "Webhook-Signature": true,
}

// LoadSecret reads a secret_file. Its errors name the projector and the
// file, never the content.
func LoadSecret(projector, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("projector %s: sink.http.secret_file: cannot read %s: %v", projector, path, pathErr(err))
	}
	key, err := ParseSecret(string(b))
	if err != nil {
		return nil, fmt.Errorf("projector %s: sink.http.secret_file %s %v", projector, path, err)
	}
	return key, nil
}

// LoadHeaders reads a headers_file: one "Name: value" a line; blank lines
// and lines starting with # are ignored. Values are secrets (Authorization):
// errors name the line, never its content.
func LoadHeaders(projector, path string) (http.Header, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("projector %s: sink.http.headers_file: cannot read %s: %v", projector, path, pathErr(err))
	}
	return ParseHeaders(projector, path, b)
}

// ParseHeaders is LoadHeaders on the file's content.
func ParseHeaders(projector, path string, content []byte) (http.Header, error) {
	h := http.Header{}
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("projector %s: sink.http.headers_file %s, line %d: %s", projector, path, n, why)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, bad(`is not "Name: value"`)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !validName(name) {
			return nil, bad("has an invalid header name")
		}
		if !validValue(value) {
			return nil, bad("has an invalid header value (control characters)")
		}
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if reserved[canon] {
			return nil, bad(fmt.Sprintf("sets %s, which projectord sets itself", canon))
		}
		h.Add(canon, value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("projector %s: sink.http.headers_file %s: %v", projector, path, err)
	}
	return h, nil
}

// pathErr drops the path an *os.PathError repeats.
func pathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// validName reports whether s is an RFC 9110 token.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether s holds no control character but tab.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
