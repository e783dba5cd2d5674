// Package httpsink delivers a projector's batches to the user's own HTTP
// service: one POST per batch, a CloudEvents 1.0 JSON batch body, signed
// per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).
//
// Delivery is at-least-once. The checkpoint moves only after a 2xx, through
// the same fenced projectord.advance() as the SQL sink, in the projectord
// schema of database.url. Before each POST the batch's cursor range is
// recorded, fenced by the leader's epoch (store.Target.RecordDelivery): a
// new leader bounds its first batch to that range (runner.BatchBounder), so
// a batch that may have been acknowledged but not checkpointed comes again
// with the same events and the same webhook-id, never inside a longer one.
package httpsink
