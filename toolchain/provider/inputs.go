package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// connection mirrors the subset of pulumi-command's remote `Connection` type that the stand-in supports.
type connection struct {
	host               string
	port               int
	user               string
	privateKey         string
	privateKeyPassword string
	password           string
	hostKey            string
	dialErrorLimit     int           // -1: unlimited
	perDialTimeout     time.Duration // 0: no limit
}

var knownInputs = map[string]bool{
	"addPreviousOutputInEnv": true, "connection": true, "create": true, "delete": true, "environment": true,
	"logging": true, "stdin": true, "triggers": true, "update": true,
}

// Connection fields the real provider has but this stand-in does not implement: fail loudly instead of silently
// doing something else.
var unsupportedConnection = map[string]string{
	"proxy":           "connecting through a proxy/bastion host",
	"agentSocketPath": "authentication through an SSH agent",
}

var loggingModes = map[string]bool{"stdout": true, "stderr": true, "stdoutAndStderr": true, "none": true}

// validateInputs returns (property, reason) pairs for Check. Unknown values (preview) are accepted.
func validateInputs(in resource.PropertyMap) [][2]string {
	var fails [][2]string
	for k := range in {
		if !knownInputs[string(k)] && !outputOnlyKeys[string(k)] && !isInternal(string(k)) {
			fails = append(fails, [2]string{string(k), fmt.Sprintf("unknown property %q", k)})
		}
	}
	c, ok := in["connection"]
	switch {
	case !ok:
		fails = append(fails, [2]string{"connection", "missing required property 'connection'"})
	case c.ContainsUnknowns() && !c.IsObject():
	case !c.IsObject():
		fails = append(fails, [2]string{"connection", "connection must be an object"})
	default:
		obj := c.ObjectValue()
		if h, ok := obj["host"]; !ok || (!h.IsComputed() && !h.IsOutput() && (!h.IsString() || h.StringValue() == "")) {
			fails = append(fails, [2]string{"connection.host", "missing required property 'connection.host'"})
		}
		for k, what := range unsupportedConnection {
			if v, ok := obj[resource.PropertyKey(k)]; ok && !v.IsNull() {
				fails = append(fails, [2]string{"connection." + k,
					what + " is not supported by nixfleet's stand-in command provider (see toolchain/README.md)"})
			}
		}
	}
	if l, ok := in["logging"]; ok && l.IsString() && !loggingModes[l.StringValue()] {
		fails = append(fails, [2]string{"logging", fmt.Sprintf("invalid logging mode %q", l.StringValue())})
	}
	return fails
}

func isInternal(k string) bool { return len(k) >= 2 && k[:2] == "__" }

func parseConnection(in resource.PropertyMap) (connection, error) {
	c := connection{port: 22, user: "root", dialErrorLimit: 10, perDialTimeout: 15 * time.Second}
	v, ok := in["connection"]
	if !ok || !v.IsObject() {
		return c, errors.New("missing required property 'connection'")
	}
	obj := v.ObjectValue()
	c.host = getString(obj, "host")
	if c.host == "" {
		return c, errors.New("missing required property 'connection.host'")
	}
	if u := getString(obj, "user"); u != "" {
		c.user = u
	}
	c.privateKey = getString(obj, "privateKey")
	c.privateKeyPassword = getString(obj, "privateKeyPassword")
	c.password = getString(obj, "password")
	c.hostKey = getString(obj, "hostKey")
	if n, ok := getNumber(obj, "port"); ok {
		c.port = int(n)
	}
	if n, ok := getNumber(obj, "dialErrorLimit"); ok {
		c.dialErrorLimit = int(n)
	}
	if n, ok := getNumber(obj, "perDialTimeout"); ok {
		c.perDialTimeout = time.Duration(n * float64(time.Second))
	}
	return c, nil
}

func plain(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

func getString(m resource.PropertyMap, k string) string {
	if v, ok := m[resource.PropertyKey(k)]; ok {
		if v = plain(v); v.IsString() {
			return v.StringValue()
		}
	}
	return ""
}

func getNumber(m resource.PropertyMap, k string) (float64, bool) {
	if v, ok := m[resource.PropertyKey(k)]; ok {
		if v = plain(v); v.IsNumber() {
			return v.NumberValue(), true
		}
	}
	return 0, false
}

func getBool(m resource.PropertyMap, k string, def bool) bool {
	if v, ok := m[resource.PropertyKey(k)]; ok {
		if v = plain(v); v.IsBool() {
			return v.BoolValue()
		}
	}
	return def
}

func getStringMap(m resource.PropertyMap, k string) map[string]string {
	out := map[string]string{}
	if v, ok := m[resource.PropertyKey(k)]; ok {
		if v = plain(v); v.IsObject() {
			for kk, vv := range v.ObjectValue() {
				if vv = plain(vv); vv.IsString() {
					out[string(kk)] = vv.StringValue()
				}
			}
		}
	}
	return out
}
