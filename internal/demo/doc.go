// Package demo is the shop that `projectord dev` runs against: the events
// table and the read-model tables of configs/dev.yaml (Setup), a generator
// that appends a realistic e-commerce event stream to it from several
// concurrent writers (Generator), and a check that the read models agree
// with the events (Verify).
//
// It plays the application, not projectord. Its SQL writes and reads the
// user's side of the database (the events an application appends, the
// tables its read models fill), which is why it lives here and not in
// internal/store, and projectord itself never imports it outside dev mode.
//
// Every order is one stream, order-<uuid>, owned by one writer, and goes
// through these events, each appended in a transaction of its own with the
// stream's next stream_version:
//
//	OrderPlaced ──▶ ItemAdded ×1..5 ──▶ PaymentCaptured ──▶ ShipmentDispatched
//	 version 1       versions 2..k+1     version k+2         version k+3, done
//
// A writer keeps up to maxOpen orders open and picks which one moves next
// at random, so the stream interleaves orders in every state, and the
// writers' transactions commit out of position order, as a real
// application's do. The unique (stream_id, stream_version) constraint is the
// optimistic-concurrency check an event store would make.
package demo
