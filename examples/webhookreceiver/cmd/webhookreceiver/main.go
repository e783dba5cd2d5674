// Command webhookreceiver runs the example receiver of projectord's HTTP
// sink: it prints every event it applies, once.
//
//	WEBHOOK_SECRET=whsec_... webhookreceiver -listen 127.0.0.1:8081
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/projectord/projectord/examples/webhookreceiver"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	flag.Parse()
	r := &webhookreceiver.Receiver{Secret: os.Getenv("WEBHOOK_SECRET"), Apply: func(e webhookreceiver.Event) error {
		fmt.Printf("%s %s position=%d stream=%s data=%s\n", e.Source, e.Type, e.Position, e.StreamID, e.Data)
		return nil
	}}
	if r.Secret == "" {
		log.Print("WEBHOOK_SECRET is not set: accepting unsigned requests")
	}
	log.Printf("listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, r))
}
