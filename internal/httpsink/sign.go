package httpsink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// secretPrefix starts a Standard Webhooks signing secret.
const secretPrefix = "whsec_"

// errSecretFormat never carries the secret itself: only what is wrong.
var errSecretFormat = errors.New(`is not a Standard Webhooks secret: it must be "whsec_" followed by base64 (standard alphabet, padded) of at least 24 bytes`)

// ParseSecret returns the key of a secret "whsec_<base64>". Surrounding
// white space (a trailing newline of a file) is ignored.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errSecretFormat
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	// The spec recommends 24 to 64 bytes; shorter keys are guessable.
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errSecretFormat
	}
	return key, nil
}

// Sign returns the webhook-signature header value for id, timestamp and
// body: "v1," and the base64 HMAC-SHA256 of "id.timestamp.body".
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	return string(AppendSignature(nil, key, id, timestamp, body))
}

// AppendSignature is Sign into buf.
func AppendSignature(buf, key []byte, id string, timestamp int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	var ts [20]byte
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(ts[:0], timestamp, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	var sum [sha256.Size]byte
	buf = append(buf, "v1,"...)
	return base64.StdEncoding.AppendEncode(buf, m.Sum(sum[:0]))
}
