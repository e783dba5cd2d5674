// Package webhookreceiver is an example receiver of projectord's HTTP sink,
// standard library only: it verifies each request's Standard Webhooks
// signature (constant-time, with a timestamp tolerance against replays),
// decodes the CloudEvents batch and hands each event to Apply once,
// deduplicating by a set of the events applied, keyed by source, reset
// generation and position, since delivery is at-least-once: after a
// failover or an unanswered request the same batch comes again, with the
// same webhook-id.
//
// It keeps a set, never "the last position applied": deliveries are in
// cursor order, (transaction id, position) under the default ordering
// xid8, and positions are not monotonic in it (a transaction with an older
// id can insert its event after a younger one did: a higher position
// delivered first), so a receiver skipping anything at or below the last
// position applied drops events for good. The generation is in the key because a reset delivers every event
// again, at the same positions, and must be applied again.
//
// Its memory is a map, for the example; a real receiver keeps what it has
// applied in its own store, written with the effect (a unique key on
// (resetgeneration, position), or the webhook-ids of the batches applied,
// in the same transaction), so that a crash between the two cannot apply
// an event twice.
package webhookreceiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one CloudEvent of a batch, as projectord sends it.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	// Position, TransactionID, StreamVersion and ResetGeneration come as
	// decimal strings (CloudEvents Integers are 32 bits): the ",string"
	// option parses them.
	Position        int64  `json:"position,string"`
	TransactionID   uint64 `json:"transactionid,string"`
	StreamID        string `json:"streamid"`
	StreamVersion   int64  `json:"streamversion,string"`
	ResetGeneration int64  `json:"resetgeneration,string,omitempty"`
	// Metadata is the event's metadata as JSON text (CloudEvents
	// attributes cannot be objects); empty when the event has none.
	Metadata string `json:"metadata,omitempty"`
}

// key identifies an event across redeliveries: a position is unique in the
// event store, and a reset starts a new generation.
type key struct {
	source   string
	gen, pos int64
}

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock, as the Standard Webhooks spec suggests.
const DefaultTolerance = 5 * time.Minute

// MaxBody bounds a request's body.
const MaxBody = 64 << 20

// ErrPoison, returned by Apply (wrapped or not), makes the receiver answer
// 422 with {"failed_position": N}: projectord applies the projector's
// on_error policy to that event.
var ErrPoison = errors.New("event refused")

// Receiver is an http.Handler for one or more projectors' deliveries.
type Receiver struct {
	// Secret is the signing secret, "whsec_<base64>"; empty accepts
	// unsigned requests (do not, outside a demo).
	Secret string
	// Tolerance bounds the timestamp's age; 0 means DefaultTolerance.
	Tolerance time.Duration
	// Apply is called once per event (by source and position), in the
	// order of delivery; an error answers the batch with 422 (naming the
	// event if it wraps ErrPoison) or 500 (anything else: retried).
	Apply func(Event) error
	// Now, if set, replaces time.Now (tests).
	Now func() time.Time

	once sync.Once
	key  []byte
	kerr error

	mu   sync.Mutex
	seen map[key]bool
}

// Verify checks the request's signature headers against body and returns
// its webhook-id.
func (r *Receiver) Verify(h http.Header, body []byte) (string, error) {
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return "", errors.New("missing webhook-id or webhook-timestamp")
	}
	if r.Secret == "" {
		return id, nil
	}
	r.once.Do(func() { r.key, r.kerr = parseSecret(r.Secret) })
	if r.kerr != nil {
		return "", r.kerr
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", errors.New("webhook-timestamp is not unix seconds")
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	tol := r.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tol || d < -tol {
		return "", errors.New("webhook-timestamp is outside the tolerance")
	}
	m := hmac.New(sha256.New, r.key)
	fmt.Fprintf(m, "%s.%d.", id, sec)
	m.Write(body)
	want := m.Sum(nil)
	// The header may carry several space-separated signatures (a secret
	// being rotated); any v1 match will do.
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		v, b64, ok := strings.Cut(sig, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return id, nil
		}
	}
	return "", errors.New("no valid signature")
}

func parseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "whsec_")
	if !ok {
		return nil, errors.New(`the secret does not start with "whsec_"`)
	}
	return base64.StdEncoding.DecodeString(rest)
}

// ServeHTTP answers 401 for a bad signature, 400 for a body that is not a
// CloudEvents batch, 2xx once every new event is applied.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBody))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	if _, err := r.Verify(req.Header, body); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var events []Event
	if err := json.Unmarshal(body, &events); err != nil {
		http.Error(w, "not a CloudEvents JSON batch", http.StatusBadRequest)
		return
	}
	for _, e := range events {
		if r.applied(e) {
			continue
		}
		if r.Apply != nil {
			if err := r.Apply(e); err != nil {
				if errors.Is(err, ErrPoison) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnprocessableEntity)
					fmt.Fprintf(w, `{"failed_position": %d}`, e.Position)
					return
				}
				http.Error(w, "cannot apply the event now", http.StatusInternalServerError)
				return
			}
		}
		r.mark(e)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *Receiver) applied(e Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key{e.Source, e.ResetGeneration, e.Position}]
}

func (r *Receiver) mark(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[key]bool{}
	}
	r.seen[key{e.Source, e.ResetGeneration, e.Position}] = true
}

// Applied returns how many distinct events of source were applied, every
// generation counted.
func (r *Receiver) Applied(source string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k := range r.seen {
		if k.source == source {
			n++
		}
	}
	return n
}
