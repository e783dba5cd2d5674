package httpsink

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/projectord/projectord/internal/store"
)

// ContentType is the media type of a CloudEvents JSON batch.
const ContentType = "application/cloudevents-batch+json"

// timeFormat is RFC 3339 with microseconds, always written: PostgreSQL's
// precision, and one shape for receivers to parse.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// WebhookID names a batch by what it is, not by when it was sent: the
// projector, its reset generation and the cursors of every event in it.
// Every retry, and every leader after a failover that delivers the same
// events, sends the same id, so a receiver can deduplicate by it; a reset
// (a new generation) or a batch holding other events (a changed filter)
// gets another id. Hashing every cursor costs 16 bytes of SHA-256 input per
// event, next to hundreds of bytes of body.
func WebhookID(projector string, gen int64, events []store.Event) string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(projector)))
	h.Write(n[:])
	h.Write([]byte(projector))
	binary.BigEndian.PutUint64(n[:], uint64(gen))
	h.Write(n[:])
	for i := range events {
		c := events[i].Cursor
		binary.BigEndian.PutUint64(n[:], c.XID)
		h.Write(n[:])
		binary.BigEndian.PutUint64(n[:], uint64(c.Position))
		h.Write(n[:])
	}
	sum := h.Sum(nil)
	return "msg_" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// AppendBatch appends the CloudEvents JSON batch of events to buf. It is
// written by hand, field by field, into a buffer the caller reuses: encoding
// is on the path of every event, and encoding/json's reflection cost more
// than the rest of a delivery. Data and metadata are stored JSON (the reader
// validated any that was text) and go in verbatim.
//
// gen is the projector's reset generation (store.Checkpoint.Resets): after
// the first reset every event carries it as resetgeneration.
func AppendBatch(buf []byte, projector string, gen int64, events []store.Event) []byte {
	buf = append(buf, '[')
	for i := range events {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendEvent(buf, projector, gen, &events[i])
	}
	return append(buf, ']')
}

func appendEvent(buf []byte, projector string, gen int64, e *store.Event) []byte {
	buf = append(buf, `{"specversion":"1.0","id":`...)
	if e.EventID != "" {
		buf = appendString(buf, e.EventID)
	} else {
		buf = append(buf, '"')
		buf = appendStringBody(buf, projector)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, e.Position, 10)
		buf = append(buf, '"')
	}
	buf = append(buf, `,"source":"projectord/`...)
	buf = appendStringBody(buf, projector)
	buf = append(buf, `","type":`...)
	buf = appendString(buf, e.Type)
	if !e.CreatedAt.IsZero() {
		buf = append(buf, `,"time":"`...)
		buf = e.CreatedAt.UTC().AppendFormat(buf, timeFormat)
		buf = append(buf, '"')
	}
	buf = append(buf, `,"datacontenttype":"application/json","data":`...)
	if len(e.Data) == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, e.Data...)
	}
	// The extension attributes are CloudEvents Strings: its Integer is 32
	// bits, too small for positions and transaction ids, and an attribute
	// cannot be an object, so metadata goes as its JSON text.
	buf = append(buf, `,"position":"`...)
	buf = strconv.AppendInt(buf, e.Position, 10)
	buf = append(buf, `","transactionid":"`...)
	buf = strconv.AppendUint(buf, e.XID, 10)
	buf = append(buf, `","streamid":`...)
	buf = appendString(buf, e.StreamID)
	buf = append(buf, `,"streamversion":"`...)
	buf = strconv.AppendInt(buf, e.StreamVersion, 10)
	buf = append(buf, '"')
	if gen > 0 {
		buf = append(buf, `,"resetgeneration":"`...)
		buf = strconv.AppendInt(buf, gen, 10)
		buf = append(buf, '"')
	}
	if len(e.Metadata) > 0 {
		buf = append(buf, `,"metadata":`...)
		buf = appendString(buf, e.Metadata)
	}
	return append(buf, '}')
}

func appendString[S ~string | ~[]byte](buf []byte, s S) []byte {
	buf = append(buf, '"')
	buf = appendStringBody(buf, s)
	return append(buf, '"')
}

const hexDigits = "0123456789abcdef"

// appendStringBody escapes s as the inside of a JSON string. Invalid UTF-8
// becomes U+FFFD, as encoding/json does, so the body is always valid JSON.
func appendStringBody[S ~string | ~[]byte](buf []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(buf, s[start:]...)
}
