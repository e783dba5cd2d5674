package webhookreceiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func signed(t *testing.T, id, body string) *http.Request {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	ts := time.Now().Unix()
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	r := httptest.NewRequest(http.MethodPost, "/events", strings.NewReader(body))
	r.Header.Set("webhook-id", id)
	r.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	r.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return r
}

func batch(positions ...int64) string {
	var parts []string
	for _, p := range positions {
		parts = append(parts, fmt.Sprintf(`{"specversion":"1.0","id":"e%d","source":"projectord/p","type":"T","position":"%d","data":{}}`, p, p))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Each event is applied once by position, however often its batch comes;
// a poison event is answered 422 naming it; a bad signature 401.
func TestReceiverDeduplicatesAndNamesThePoisonEvent(t *testing.T) {
	var applied []int64
	r := &Receiver{Secret: secret, Apply: func(e Event) error {
		if e.Position == 4 {
			return fmt.Errorf("%w: no such product", ErrPoison)
		}
		applied = append(applied, e.Position)
		return nil
	}}
	for _, c := range []struct {
		id, body string
		status   int
	}{
		{"msg_1", batch(1, 2), 204},
		{"msg_1", batch(1, 2), 204}, // delivered again: nothing applied twice
		{"msg_2", batch(3, 4, 5), 422},
		{"msg_3", batch(3), 204},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, signed(t, c.id, c.body))
		if w.Code != c.status {
			t.Fatalf("%s: status %d, want %d (%s)", c.id, w.Code, c.status, w.Body)
		}
		if c.status == 422 && !strings.Contains(w.Body.String(), `"failed_position": 4`) {
			t.Fatalf("422 body %q does not name position 4", w.Body)
		}
	}
	if fmt.Sprint(applied) != "[1 2 3]" {
		t.Fatalf("applied %v, want [1 2 3]", applied)
	}
	bad := signed(t, "msg_4", batch(6))
	bad.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
	w := httptest.NewRecorder()
	r.ServeHTTP(w, bad)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("bad signature: status %d, want 401", w.Code)
	}
	if r.Applied("projectord/p") != 3 {
		t.Fatalf("Applied = %d, want 3", r.Applied("projectord/p"))
	}
}

// Under xid8 ordering a higher position can be delivered before a lower one
// (an older transaction inserting last): both are applied. After a reset
// (a new resetgeneration) every event is applied again.
func TestReceiverKeepsASetOfPositionsAndAppliesAReplay(t *testing.T) {
	var applied []int64
	r := &Receiver{Secret: secret, Apply: func(e Event) error { applied = append(applied, e.Position); return nil }}
	replay := strings.ReplaceAll(batch(9, 5), `"data"`, `"resetgeneration":"1","data"`)
	for _, c := range []struct{ id, body string }{
		{"msg_a", batch(9)},
		{"msg_b", batch(5)}, // lower position, later in cursor order
		{"msg_b", batch(5)}, // redelivered
		{"msg_c", replay},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, signed(t, c.id, c.body))
		if w.Code != http.StatusNoContent {
			t.Fatalf("%s: status %d (%s)", c.id, w.Code, w.Body)
		}
	}
	if fmt.Sprint(applied) != "[9 5 9 5]" {
		t.Fatalf("applied %v, want [9 5 9 5]", applied)
	}
}
