package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	// pluginVersion is the version of pulumi-command whose behaviour this stand-in simulates. It must equal the
	// version in @pulumi/command's package.json: the engine looks the plugin up by that exact version.
	pluginVersion = "1.2.1"
	commandType   = "command:remote:Command"
)

// replaceKeys are inputs whose change replaces the resource (delete + create) instead of updating it.
var replaceKeys = map[string]bool{"triggers": true}

// outputOnlyKeys are state properties that are not inputs.
var outputOnlyKeys = map[string]bool{"stdout": true, "stderr": true}

type provider struct {
	pulumirpc.UnimplementedResourceProviderServer

	engine pulumirpc.EngineClient // nil when started without an engine (tests)

	// base is cancelled by the Cancel RPC or on SIGINT; it ends dial retries (never a running command).
	base   context.Context
	cancel context.CancelFunc
}

func newProvider(engine pulumirpc.EngineClient) *provider {
	base, cancel := context.WithCancel(context.Background())
	return &provider{engine: engine, base: base, cancel: cancel}
}

func (p *provider) cancelAll() { p.cancel() }

// opContext returns a context that ends when the RPC ends, the provider is cancelled or the timeout passes. Like the
// real provider's, it only ends dial retries: a command that is running is never stopped by it.
func (p *provider) opContext(rpc context.Context, timeout float64) (context.Context, context.CancelFunc) {
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(rpc, time.Duration(timeout*float64(time.Second)))
	} else {
		ctx, cancel = context.WithCancel(rpc)
	}
	stop := context.AfterFunc(p.base, cancel)
	return ctx, func() { stop(); cancel() }
}

func unmarshal(s *structpb.Struct, label string) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	// acceptSecrets=false: the engine never sends secrets; unwrap defensively anyway.
	return plugin.UnmarshalProperties(s, plugin.MarshalOptions{
		Label: label, KeepUnknowns: true, SkipNulls: true, KeepSecrets: false,
	})
}

func marshal(m resource.PropertyMap, label string) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, plugin.MarshalOptions{
		Label: label, KeepUnknowns: true, SkipNulls: true, KeepSecrets: false,
	})
}

func checkType(t string) error {
	if t != commandType {
		return status.Errorf(codes.InvalidArgument,
			"unknown resource type %q: nixfleet's stand-in command provider implements only %s", t, commandType)
	}
	return nil
}

func typeOf(urn string) string {
	u, err := resource.ParseURN(urn)
	if err != nil {
		return ""
	}
	return string(u.Type())
}

// ---- provider-level RPCs -------------------------------------------------------------------------------------

func (p *provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: pluginVersion}, nil
}

func (p *provider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: `{"name":"command","version":"` + pluginVersion + `",` +
		`"description":"nixfleet stand-in for pulumi-command (command:remote:Command only)"}`}, nil
}

func (p *provider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *provider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *provider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	// Like the real provider: no secrets on the wire (the engine strips them from inputs and re-marks the
	// outputs whose inputs were secret), and no Create/Update calls during preview.
	return &pulumirpc.ConfigureResponse{AcceptSecrets: false, SupportsPreview: false}, nil
}

func (p *provider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.cancelAll()
	return &emptypb.Empty{}, nil
}

// ---- resource RPCs -------------------------------------------------------------------------------------------

func (p *provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if err := checkType(typeOf(req.GetUrn())); err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "check.news")
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	for _, f := range validateInputs(news) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: f[0], Reason: f[1]})
	}
	if len(failures) > 0 {
		return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
	}
	// Like the real provider's Check: connection defaults become part of the inputs (and so of the state).
	inputs, err := marshal(withConnectionDefaults(news), "check.inputs")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs}, nil
}

func (p *provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := oldInputs(req.GetOldInputs(), req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "diff.news")
	if err != nil {
		return nil, err
	}
	ignore := map[string]bool{}
	for _, k := range req.GetIgnoreChanges() {
		ignore[k] = true
	}
	return diffInputs(olds, news, ignore), nil
}

// diffInputs compares inputs key by key: `triggers` replaces, any other input change updates.
func diffInputs(olds, news resource.PropertyMap, ignore map[string]bool) *pulumirpc.DiffResponse {
	keys := map[string]bool{}
	for k := range olds {
		keys[string(k)] = true
	}
	for k := range news {
		keys[string(k)] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		if !outputOnlyKeys[k] && !ignore[k] {
			sorted = append(sorted, k)
		}
	}
	sort.Strings(sorted)

	resp := &pulumirpc.DiffResponse{
		Changes:         pulumirpc.DiffResponse_DIFF_NONE,
		HasDetailedDiff: true,
		DetailedDiff:    map[string]*pulumirpc.PropertyDiff{},
	}
	for _, k := range sorted {
		o, hasOld := olds[resource.PropertyKey(k)]
		n, hasNew := news[resource.PropertyKey(k)]
		var kind pulumirpc.PropertyDiff_Kind
		switch {
		case !hasOld && hasNew:
			kind = pulumirpc.PropertyDiff_ADD
		case hasOld && !hasNew:
			kind = pulumirpc.PropertyDiff_DELETE
		case n.ContainsUnknowns() || !o.DeepEquals(n):
			kind = pulumirpc.PropertyDiff_UPDATE
		default:
			continue
		}
		if replaceKeys[k] {
			kind += 1 // ADD→ADD_REPLACE, DELETE→DELETE_REPLACE, UPDATE→UPDATE_REPLACE
			resp.Replaces = append(resp.Replaces, k)
		}
		resp.Diffs = append(resp.Diffs, k)
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return resp
}

func oldInputs(oldInputs, olds *structpb.Struct) (resource.PropertyMap, error) {
	if oldInputs != nil && len(oldInputs.GetFields()) > 0 {
		return unmarshal(oldInputs, "diff.oldInputs")
	}
	m, err := unmarshal(olds, "diff.olds")
	if err != nil {
		return nil, err
	}
	for k := range outputOnlyKeys {
		delete(m, resource.PropertyKey(k))
	}
	return m, nil
}

func withOutputs(inputs resource.PropertyMap, stdout, stderr resource.PropertyValue) resource.PropertyMap {
	outs := inputs.Copy()
	outs["stdout"] = stdout
	outs["stderr"] = stderr
	return outs
}

func unknown() resource.PropertyValue {
	return resource.MakeComputed(resource.NewStringProperty(""))
}

func (p *provider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if err := checkType(typeOf(req.GetUrn())); err != nil {
		return nil, err
	}
	inputs, err := unmarshal(req.GetProperties(), "create.properties")
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		outs, err := marshal(withOutputs(inputs, unknown(), unknown()), "create.preview")
		return &pulumirpc.CreateResponse{Properties: outs}, err
	}
	var stdout, stderr string
	if cmd := getOptString(inputs, "create"); cmd != nil {
		stdout, stderr, err = p.runPhase(ctx, req.GetUrn(), req.GetTimeout(), inputs, *cmd, nil)
		if err != nil {
			return nil, err
		}
	}
	outs, err := marshal(withOutputs(inputs, resource.NewStringProperty(stdout), resource.NewStringProperty(stderr)),
		"create.outputs")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: newID(req.GetUrn()), Properties: outs}, nil
}

func (p *provider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	// Nothing to read back from a host: the state is what the last run produced (refresh is a no-op).
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func (p *provider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if err := checkType(typeOf(req.GetUrn())); err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "update.news")
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		outs, err := marshal(withOutputs(news, unknown(), unknown()), "update.preview")
		return &pulumirpc.UpdateResponse{Properties: outs}, err
	}
	olds, err := unmarshal(req.GetOlds(), "update.olds")
	if err != nil {
		return nil, err
	}
	// Without an update or create command the previous outputs stay, as in the real provider.
	stdout, stderr := getString(olds, "stdout"), getString(olds, "stderr")
	cmd := getOptString(news, "update")
	if cmd == nil {
		cmd = getOptString(news, "create")
	}
	if cmd != nil {
		stdout, stderr, err = p.runPhase(ctx, req.GetUrn(), req.GetTimeout(), news, *cmd, olds)
		if err != nil {
			return nil, err
		}
	}
	outs, err := marshal(withOutputs(news, resource.NewStringProperty(stdout), resource.NewStringProperty(stderr)),
		"update.outputs")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: outs}, nil
}

func (p *provider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	if err := checkType(typeOf(req.GetUrn())); err != nil {
		return nil, err
	}
	state, err := unmarshal(req.GetProperties(), "delete.properties")
	if err != nil {
		return nil, err
	}
	if cmd := getOptString(state, "delete"); cmd != nil {
		if _, _, err := p.runPhase(ctx, req.GetUrn(), req.GetTimeout(), state, *cmd, state); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// runPhase runs one lifecycle command (create, update or delete) with the given inputs. prev holds the previous
// state, whose stdout/stderr are offered as PULUMI_COMMAND_STDOUT/STDERR when addPreviousOutputInEnv allows.
// timeout (customTimeouts, seconds, 0: none) ends the dial retries only, as in the real provider.
func (p *provider) runPhase(rpc context.Context, urn string, timeout float64, inputs resource.PropertyMap, cmd string,
	prev resource.PropertyMap,
) (string, string, error) {
	conn, err := parseConnection(inputs)
	if err != nil {
		return "", "", err
	}
	spec := runSpec{
		conn:    conn,
		command: cmd,
		env:     getStringMap(inputs, "environment"),
		logging: getString(inputs, "logging"),
		urn:     urn,
	}
	spec.stdin = getString(inputs, "stdin")
	if prev != nil && getBool(inputs, "addPreviousOutputInEnv", true) {
		spec.prevEnv = map[string]string{
			"PULUMI_COMMAND_STDOUT": getString(prev, "stdout"),
			"PULUMI_COMMAND_STDERR": getString(prev, "stderr"),
		}
	}
	ctx, cancel := p.opContext(rpc, timeout)
	defer cancel()
	return p.runRemote(ctx, spec)
}

func newID(urn string) string {
	name := "command"
	if u, err := resource.ParseURN(urn); err == nil {
		name = u.Name()
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + hex.EncodeToString(b) // "<name><8 hex>", like the real provider's resource.NewUniqueHex(name, 8, 0)
}
