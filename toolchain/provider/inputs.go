package main

import (
	"errors"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// connBase mirrors pulumi-command v1.2.1's remote connection fields (the target and, the same shape, a proxy).
// Pointers: nil means "not set", which matters for agentSocketPath (set, even to "", wins over SSH_AUTH_SOCK).
type connBase struct {
	host               string
	port               int
	user               string
	privateKey         *string
	privateKeyPassword *string
	password           *string
	hostKey            *string
	agentSocketPath    *string
	dialErrorLimit     int // -1: unlimited
	perDialTimeout     int // seconds, 0: no limit (bounds only the TCP connect, as in the real provider)
}

type connection struct {
	connBase
	proxy *connBase
}

// connectionDefaults are what the real provider's Check writes into `connection` (and `connection.proxy`) when a
// field is absent, so they end up in the state's inputs and outputs. A state without them diffs against the real
// provider's Check result and re-runs every command once.
var connectionDefaults = map[string]float64{"port": 22, "dialErrorLimit": 10, "perDialTimeout": 15}

const defaultUser = "root"

var knownInputs = map[string]bool{
	"addPreviousOutputInEnv": true, "connection": true, "create": true, "delete": true, "environment": true,
	"logging": true, "stdin": true, "triggers": true, "update": true,
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
		if !hasHost(obj) {
			fails = append(fails, [2]string{"connection.host", "missing required property 'connection.host'"})
		}
		if p, ok := obj["proxy"]; ok && p.IsObject() && !hasHost(p.ObjectValue()) {
			fails = append(fails, [2]string{"connection.proxy.host", "missing required property 'connection.proxy.host'"})
		}
	}
	if l, ok := in["logging"]; ok && l.IsString() && !loggingModes[l.StringValue()] {
		fails = append(fails, [2]string{"logging", fmt.Sprintf("invalid logging mode %q", l.StringValue())})
	}
	return fails
}

func hasHost(obj resource.PropertyMap) bool {
	h, ok := obj["host"]
	return ok && (h.IsComputed() || h.IsOutput() || (h.IsString() && h.StringValue() != ""))
}

// withConnectionDefaults returns the inputs with the real Check's defaults filled into connection (and proxy).
func withConnectionDefaults(in resource.PropertyMap) resource.PropertyMap {
	out := in.Copy()
	c, ok := out["connection"]
	if !ok || !c.IsObject() {
		return out
	}
	obj := fillDefaults(c.ObjectValue())
	if p, ok := obj["proxy"]; ok && p.IsObject() {
		obj["proxy"] = resource.NewObjectProperty(fillDefaults(p.ObjectValue()))
	}
	out["connection"] = resource.NewObjectProperty(obj)
	return out
}

func fillDefaults(obj resource.PropertyMap) resource.PropertyMap {
	obj = obj.Copy()
	for k, v := range connectionDefaults {
		if cur, ok := obj[resource.PropertyKey(k)]; !ok || cur.IsNull() {
			obj[resource.PropertyKey(k)] = resource.NewNumberProperty(v)
		}
	}
	if cur, ok := obj["user"]; !ok || cur.IsNull() {
		obj["user"] = resource.NewStringProperty(defaultUser)
	}
	return obj
}

func isInternal(k string) bool { return len(k) >= 2 && k[:2] == "__" }

func parseConnection(in resource.PropertyMap) (connection, error) {
	v, ok := in["connection"]
	if v = plain(v); !ok || !v.IsObject() {
		return connection{}, errors.New("missing required property 'connection'")
	}
	obj := v.ObjectValue()
	c := connection{connBase: parseBase(obj)}
	if c.host == "" {
		return c, errors.New("missing required property 'connection.host'")
	}
	if p, ok := obj["proxy"]; ok {
		if p = plain(p); p.IsObject() {
			proxy := parseBase(p.ObjectValue())
			c.proxy = &proxy
		}
	}
	return c, nil
}

// parseBase reads one connection object; absent numbers get the defaults (Check normally filled them already).
func parseBase(obj resource.PropertyMap) connBase {
	obj = fillDefaults(obj)
	n := func(k string) int { f, _ := getNumber(obj, k); return int(f) }
	return connBase{
		host:               getString(obj, "host"),
		port:               n("port"),
		user:               getString(obj, "user"),
		privateKey:         getOptString(obj, "privateKey"),
		privateKeyPassword: getOptString(obj, "privateKeyPassword"),
		password:           getOptString(obj, "password"),
		hostKey:            getOptString(obj, "hostKey"),
		agentSocketPath:    getOptString(obj, "agentSocketPath"),
		dialErrorLimit:     n("dialErrorLimit"),
		perDialTimeout:     n("perDialTimeout"),
	}
}

func plain(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

func getOptString(m resource.PropertyMap, k string) *string {
	if v, ok := m[resource.PropertyKey(k)]; ok {
		if v = plain(v); v.IsString() {
			s := v.StringValue()
			return &s
		}
	}
	return nil
}

func getString(m resource.PropertyMap, k string) string {
	if s := getOptString(m, k); s != nil {
		return *s
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

// getStringMap returns the string entries of an object input, keys sorted by the caller where order matters.
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
