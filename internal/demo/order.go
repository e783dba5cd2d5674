package demo

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// maxOpen bounds the orders one writer keeps open, and with it the
// generator's memory. It is large enough that a writer's events interleave
// many orders.
const maxOpen = 32

// money is an amount in cents. It marshals as a JSON number with two
// decimals, which (@data->>'amount')::numeric reads exactly.
type money int64

func (m money) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%d.%02d", m/100, m%100)), nil
}

type product struct {
	sku   string
	name  string
	price money
}

// catalog is what the shop sells.
var catalog = []product{
	{"SKU-1001", "Espresso beans 1kg", 2490},
	{"SKU-1002", "Filter coffee 500g", 1190},
	{"SKU-1003", "Pour-over kettle", 4990},
	{"SKU-1004", "Burr grinder", 12900},
	{"SKU-1005", "Ceramic dripper", 2250},
	{"SKU-1006", "Paper filters x100", 590},
	{"SKU-1007", "Milk jug 600ml", 1890},
	{"SKU-1008", "Travel mug", 2400},
	{"SKU-1009", "Digital scale", 3490},
	{"SKU-1010", "Descaler", 790},
	{"SKU-1011", "Cold brew bottle", 2990},
	{"SKU-1012", "Tamper 58mm", 3950},
}

var (
	channels = []string{"web", "web", "web", "app", "app", "store"}
	methods  = []string{"card", "card", "card", "paypal", "invoice"}
	carriers = []string{"DHL", "UPS", "DPD", "PostNL"}
)

// customers is how many distinct customers place orders, so that some
// customers order more than once.
const customers = 500

// Event payloads. Field names are what configs/dev.yaml's handlers read.
type (
	orderPlacedData struct {
		OrderID    string `json:"order_id"`
		CustomerID string `json:"customer_id"`
		Currency   string `json:"currency"`
		Channel    string `json:"channel"`
	}
	itemAddedData struct {
		OrderID   string `json:"order_id"`
		SKU       string `json:"sku"`
		Name      string `json:"name"`
		Quantity  int    `json:"quantity"`
		UnitPrice money  `json:"unit_price"`
		Amount    money  `json:"amount"`
	}
	paymentCapturedData struct {
		OrderID    string `json:"order_id"`
		CustomerID string `json:"customer_id"`
		PaymentID  string `json:"payment_id"`
		Method     string `json:"method"`
		Amount     money  `json:"amount"`
	}
	shipmentDispatchedData struct {
		OrderID    string `json:"order_id"`
		ShipmentID string `json:"shipment_id"`
		Carrier    string `json:"carrier"`
		Items      int    `json:"items"`
	}
	metadata struct {
		CorrelationID string `json:"correlation_id"`
		Writer        int    `json:"writer"`
		Generator     string `json:"generator"`
	}
)

// order is one open order of a writer.
type order struct {
	id       string
	customer string
	version  int64 // of the last appended event
	lines    int   // ItemAdded events it will have
	added    int   // ItemAdded events appended
	quantity int
	total    money
	paid     bool
}

func (o *order) stream() string { return "order-" + o.id }

// event is one event to append.
type event struct {
	stream  string
	version int64
	typ     string
	data    any
}

// shop is one writer's open orders and its randomness. It is not safe for
// concurrent use: each writer has its own.
type shop struct {
	rnd  *rand.Rand
	open []*order
}

// next returns the next event and the change to apply to the shop once the
// event is committed. A new order starts with probability 1/4 while fewer
// than maxOpen are open; otherwise a random open order moves on.
func (s *shop) next() (event, func()) {
	if len(s.open) == 0 || (len(s.open) < maxOpen && s.rnd.IntN(4) == 0) {
		o := &order{
			id:       s.uuid(),
			customer: fmt.Sprintf("cust-%04d", 1+s.rnd.IntN(customers)),
			lines:    1 + s.rnd.IntN(5),
		}
		return event{stream: o.stream(), version: 1, typ: OrderPlaced, data: orderPlacedData{
				OrderID: o.id, CustomerID: o.customer, Currency: "EUR", Channel: pick(s.rnd, channels),
			}}, func() {
				o.version = 1
				s.open = append(s.open, o)
			}
	}
	i := s.rnd.IntN(len(s.open))
	o := s.open[i]
	v := o.version + 1
	switch {
	case o.added < o.lines:
		p := catalog[s.rnd.IntN(len(catalog))]
		qty := 1 + s.rnd.IntN(3)
		amount := p.price * money(qty)
		return event{stream: o.stream(), version: v, typ: ItemAdded, data: itemAddedData{
				OrderID: o.id, SKU: p.sku, Name: p.name, Quantity: qty, UnitPrice: p.price, Amount: amount,
			}}, func() {
				o.version, o.added, o.quantity, o.total = v, o.added+1, o.quantity+qty, o.total+amount
			}
	case !o.paid:
		return event{stream: o.stream(), version: v, typ: PaymentCaptured, data: paymentCapturedData{
				OrderID: o.id, CustomerID: o.customer, PaymentID: "pay_" + strconv.FormatUint(s.rnd.Uint64(), 36),
				Method: pick(s.rnd, methods), Amount: o.total,
			}}, func() {
				o.version, o.paid = v, true
			}
	default:
		return event{stream: o.stream(), version: v, typ: ShipmentDispatched, data: shipmentDispatchedData{
				OrderID: o.id, ShipmentID: "shp_" + strconv.FormatUint(s.rnd.Uint64(), 36),
				Carrier: pick(s.rnd, carriers), Items: o.quantity,
			}}, func() {
				s.drop(o)
			}
	}
}

// drop forgets an order: shipped, or one that cannot be appended to.
func (s *shop) drop(o *order) {
	for i, x := range s.open {
		if x == o {
			s.open[i] = s.open[len(s.open)-1]
			s.open = s.open[:len(s.open)-1]
			return
		}
	}
}

// uuid returns a random (version 4) UUID.
func (s *shop) uuid() string {
	hi, lo := s.rnd.Uint64(), s.rnd.Uint64()
	hi = hi&^0xf000 | 0x4000     // version 4
	lo = lo&^(0xc<<60) | 0x8<<60 // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

func pick(r *rand.Rand, from []string) string { return from[r.IntN(len(from))] }

// dropStream forgets the open order of stream, if any.
func (s *shop) dropStream(stream string) {
	for _, o := range s.open {
		if o.stream() == stream {
			s.drop(o)
			return
		}
	}
}
