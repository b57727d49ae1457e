// Command nginx-config-decode reads an ingress-nginx controller ConfigMap's
// data (JSON on stdin) and decodes the proxy settings the way the controller
// does: the mapstructure library at the controller's pinned version, weakly
// typed input, `json` field tags, integer seconds for the timeouts, starting
// from the controller's defaults. It prints the settings the controller would
// run with and the decode error, if any, that the controller would only log.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/mitchellh/mapstructure"
)

type proxySettings struct {
	ProxyBodySize       string `json:"proxy-body-size"`
	ProxyReadTimeout    int    `json:"proxy-read-timeout"`
	ProxySendTimeout    int    `json:"proxy-send-timeout"`
	ProxyConnectTimeout int    `json:"proxy-connect-timeout"`
}

func main() {
	var data map[string]string
	if err := json.NewDecoder(os.Stdin).Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, "stdin is not a JSON object of strings:", err)
		os.Exit(2)
	}
	settings := proxySettings{ProxyBodySize: "1m", ProxyReadTimeout: 60, ProxySendTimeout: 60, ProxyConnectTimeout: 5}
	decoder, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		WeaklyTypedInput: true, Result: &settings, TagName: "json",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var decodeError any
	if err := decoder.Decode(data); err != nil {
		decodeError = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"settings": settings, "error": decodeError})
}
