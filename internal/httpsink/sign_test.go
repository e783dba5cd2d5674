package httpsink

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/examples/webhookreceiver"
)

// The Standard Webhooks reference libraries' test vector
// (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go,
// TestWebhookSign).
func TestSignMatchesTheSpecTestVector(t *testing.T) {
	key, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	require.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`)))
}

// The example receiver accepts what the sink signs, and refuses a changed
// body, a changed id, a stale timestamp and another secret.
func TestExampleReceiverVerifiesTheSinksSignature(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := ParseSecret(secret)
	require.NoError(t, err)
	now := time.Now()
	body := []byte(`[{"position":1}]`)
	headers := func(id string, ts int64, body []byte) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		h.Set("webhook-signature", Sign(key, id, ts, body))
		return h
	}
	r := &webhookreceiver.Receiver{Secret: secret}
	_, err = r.Verify(headers("msg_a", now.Unix(), body), body)
	require.NoError(t, err)
	_, err = r.Verify(headers("msg_a", now.Unix(), body), []byte(`[{"position":2}]`))
	require.Error(t, err, "changed body")
	h := headers("msg_a", now.Unix(), body)
	h.Set("webhook-id", "msg_b")
	_, err = r.Verify(h, body)
	require.Error(t, err, "changed id")
	_, err = r.Verify(headers("msg_a", now.Add(-6*time.Minute).Unix(), body), body)
	require.Error(t, err, "stale timestamp")
	other := &webhookreceiver.Receiver{Secret: "whsec_" + strings.Repeat("QUFB", 8)}
	_, err = other.Verify(headers("msg_a", now.Unix(), body), body)
	require.Error(t, err, "another secret")
}

func TestParseSecretRefusesWhatIsNotAWhsecSecret(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!", "whsec_QUFB", "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
		_, err := ParseSecret(s)
		require.Error(t, err, "%q", s)
		if len(s) > 6 {
			require.NotContains(t, err.Error(), s[6:], "the error never repeats the secret")
		}
	}
	_, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
	require.NoError(t, err, "a file's trailing newline")
}

func TestLoadSecretNamesProjectorAndFileNeverTheContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(p, []byte("supersecretvalue"), 0o600))
	_, err := LoadSecret("search_index", p)
	require.ErrorContains(t, err, "projector search_index")
	require.ErrorContains(t, err, p)
	require.NotContains(t, err.Error(), "supersecretvalue")
	_, err = LoadSecret("search_index", filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "projector search_index: sink.http.secret_file: cannot read")
}

func TestParseHeaders(t *testing.T) {
	h, err := ParseHeaders("p", "f", []byte("# comment\n\nAuthorization: Bearer s3cr3t\nx-tenant:  acme \n"))
	require.NoError(t, err)
	require.Equal(t, "Bearer s3cr3t", h.Get("Authorization"))
	require.Equal(t, "acme", h.Get("X-Tenant"))
	for content, why := range map[string]string{
		"Authorization Bearer s3cr3t": `line 1: is not "Name: value"`,
		"Bad Name: s3cr3t":            "line 1: has an invalid header name",
		"content-type: text/plain":    "sets Content-Type",
		"Webhook-Signature: v1,x":     "sets Webhook-Signature",
		"\nwebhook-id: s3cr3t":        "line 2: sets Webhook-Id",
		"X-A: s3cr3t\x01":             "invalid header value",
	} {
		_, err := ParseHeaders("p", "f", []byte(content))
		require.ErrorContains(t, err, why, "%q", content)
		require.ErrorContains(t, err, "projector p: sink.http.headers_file f")
		require.NotContains(t, err.Error(), "s3cr3t")
	}
}
