// Command pulumi-resource-command is nixfleet's STAND-IN for the Pulumi
// command provider (github.com/pulumi/pulumi-command, v1.2.1). It is written
// from scratch for nixfleet's offline toolchain because the Go module proxy
// available here refuses every version of the real provider's module (see
// toolchain/README.md). It implements only `command:remote:Command`, and
// reproduces the real v1.2.1's behaviour as read from its source (nothing
// copied) and checked against a build of it: dial retries, Check defaults,
// host keys, agents, env requests, logging, errors, cancellation. Where the
// real provider would hang for ever, the stand-in fails loudly and says so.
// Everything else answers "unimplemented".
//
// Plugin protocol (as spoken by the Pulumi engine): the engine starts the
// binary with the engine's gRPC address as the only positional argument; the
// plugin serves the ResourceProvider gRPC service on a loopback port it picks
// and prints that port on stdout, then serves until the engine sends SIGINT
// or the engine goes away.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	// The engine may pass flags such as --tracing; accept and ignore them.
	flag.String("tracing", "", "ignored")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	var engine pulumirpc.EngineClient
	if args := flag.Args(); len(args) >= 1 {
		conn, err := grpc.NewClient(args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("connecting to the engine at %s: %w", args[0], err)
		}
		defer conn.Close()
		engine = pulumirpc.NewEngineClient(conn)
		// Exit when the engine stops answering health checks.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		if err := rpcutil.Healthcheck(ctx, args[0], 5*time.Minute, cancel); err != nil {
			return fmt.Errorf("engine health check: %w", err)
		}
	}

	prov := newProvider(engine)
	cancelServe := make(chan bool)
	go func() {
		<-ctx.Done()
		prov.cancelAll()
		close(cancelServe)
	}()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelServe,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(srv, prov)
			return nil
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("%d\n", handle.Port)
	return <-handle.Done
}
