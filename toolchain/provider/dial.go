package main

// Dialing as pulumi-command v1.2.1 does (behaviour read from its source, not copied):
//   - every failed attempt is retried, whatever the cause (refused, timeout, host-key mismatch, authentication);
//   - dialErrorLimit N means N+1 attempts; before each retry an ephemeral "Dial i/N failed: retrying" status line
//     (i = 1..N), then "after N failed attempts: <last error>";
//   - the wait before retry k (k = 0..N-1) is min(100 ms * 1.5^k, 5 s) — the Pulumi SDK's retry.Until defaults;
//   - perDialTimeout bounds only the TCP connect; the SSH handshake has no bound at all (see handshakeWatchdog);
//   - the TCP connection has Go's default keep-alive (probe after 15 s idle, every 15 s, 9 probes);
//   - credentials are built before the first attempt: an agent socket that cannot be dialed fails at once;
//   - the client is never closed after the command: connections stay open until the provider exits.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

const (
	retryFirstDelay = 100 * time.Millisecond
	retryBackoff    = 1.5
	retryMaxDelay   = 5 * time.Second
)

// retryDelay is the wait after failed attempt k (0-based) before the next one.
func retryDelay(k int) time.Duration {
	d := time.Duration(float64(retryFirstDelay) * math.Pow(retryBackoff, float64(k)))
	if d > retryMaxDelay || d <= 0 {
		return retryMaxDelay
	}
	return d
}

// errHung ends the retries at once: where the stand-in's watchdog fires, the real provider would still be waiting.
type errHung struct{ addr string }

func (e errHung) Error() string {
	return fmt.Sprintf("stand-in: SSH handshake with %s hung for %s; the real provider would wait forever",
		e.addr, handshakeWatchdog())
}

// handshakeWatchdog bounds what the real provider leaves unbounded (a host that accepts TCP but never speaks SSH):
// 10 minutes, or NIXFLEET_STANDIN_HANDSHAKE_WATCHDOG seconds (tests).
func handshakeWatchdog() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("NIXFLEET_STANDIN_HANDSHAKE_WATCHDOG")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 10 * time.Minute
}

// dialWithRetry runs f until it succeeds, the limit is reached (limit -1: never) or ctx ends.
func dialWithRetry[T any](ctx context.Context, p *provider, urn, msg string, limit int, f func() (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		res, err := f()
		if err == nil {
			return res, nil
		}
		if errors.As(err, new(errHung)) {
			return zero, err
		}
		if limit > -1 && try+1 > limit {
			return zero, fmt.Errorf("after %d failed attempts: %w", try, err)
		}
		of := "inf"
		if limit != -1 {
			of = strconv.Itoa(limit)
		}
		p.log(ctx, urn, pulumirpc.LogSeverity_INFO, fmt.Sprintf("%s %d/%s failed: retrying", msg, try+1, of), true)
		select {
		case <-time.After(retryDelay(try)):
		case <-ctx.Done(): // Cancel RPC or customTimeouts: they stop the retries, never a running command
			return zero, ctx.Err()
		}
	}
}

// handshake runs the SSH handshake over conn with no deadline, like the real provider, except for the watchdog.
func handshake(conn net.Conn, addr string, cfg *ssh.ClientConfig) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	var hung atomic.Bool
	timer := time.AfterFunc(handshakeWatchdog(), func() { hung.Store(true); _ = conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	timer.Stop()
	if err != nil && hung.Load() {
		return nil, nil, nil, errHung{addr}
	}
	return c, chans, reqs, err
}

// dialSSH is one attempt of the real provider's ssh.Dial: TCP connect bounded by cfg.Timeout, then the handshake.
func dialSSH(addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	// net.DialTimeout: a net.Dialer with only Timeout set, so Go's default TCP keep-alive applies.
	tcp, err := net.DialTimeout("tcp", addr, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	c, chans, reqs, err := handshake(tcp, addr, cfg)
	if err != nil {
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// dial connects to the target, through connection.proxy when set, as the real provider does.
func (p *provider) dial(ctx context.Context, urn string, c connection) (*ssh.Client, error) {
	cfg, err := sshConfig(c.connBase)
	if err != nil {
		return nil, err
	}
	endpoint := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	if c.proxy == nil {
		return dialWithRetry(ctx, p, urn, "Dial", c.dialErrorLimit, func() (*ssh.Client, error) {
			return dialSSH(endpoint, cfg)
		})
	}
	proxyCfg, err := sshConfig(*c.proxy)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	proxyAddr := net.JoinHostPort(c.proxy.host, strconv.Itoa(c.proxy.port))
	proxy, err := dialWithRetry(ctx, p, urn, "Dial proxy", c.proxy.dialErrorLimit, func() (*ssh.Client, error) {
		return dialSSH(proxyAddr, proxyCfg)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	// Through the proxy there is no connect timeout at all (a direct-tcpip channel), as in the real provider.
	conn, err := dialWithRetry(ctx, p, urn, "Dial from proxy", c.dialErrorLimit, func() (net.Conn, error) {
		return proxy.Dial("tcp", endpoint)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	// The real provider retries the handshake on the same (by then closed) channel; so does the stand-in.
	type hs struct {
		c     ssh.Conn
		chans <-chan ssh.NewChannel
		reqs  <-chan *ssh.Request
	}
	h, err := dialWithRetry(ctx, p, urn, "Dial", c.dialErrorLimit, func() (hs, error) {
		sc, chans, reqs, err := handshake(conn, endpoint, cfg)
		return hs{sc, chans, reqs}, err
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ssh.NewClient(h.c, h.chans, h.reqs), nil
}

// sshConfig builds the client config as the real provider does: no host-key check unless hostKey is set; with
// hostKey, only that key's type is offered (so an RSA key offers only SHA-1 "ssh-rsa", which OpenSSH >= 8.8
// refuses); private key, then password + keyboard-interactive, then the agent (agentSocketPath, else a non-empty
// SSH_AUTH_SOCK). No credentials at all is not an error here: the handshake fails (and is retried).
func sshConfig(c connBase) (*ssh.ClientConfig, error) {
	cfg := &ssh.ClientConfig{
		User:            c.user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // the real provider's documented behaviour
		Timeout:         time.Duration(c.perDialTimeout) * time.Second,
	}
	if c.hostKey != nil {
		want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.hostKey))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(want) // mismatch: "ssh: host key mismatch"
		cfg.HostKeyAlgorithms = []string{want.Type()}
	}
	if c.privateKey != nil {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.privateKey), []byte(*c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.privateKey))
		}
		if err != nil {
			return nil, err // x/crypto's errors never echo the key
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != nil {
		pw := *c.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock := c.agentSocketPath
	if sock == nil {
		if env := os.Getenv("SSH_AUTH_SOCK"); env != "" {
			sock = &env
		}
	}
	if sock != nil {
		// Never closed, like the real provider's agent connection (one per dial, until the provider exits).
		conn, err := net.Dial("unix", *sock)
		if err != nil {
			return nil, err // e.g. "dial unix /tmp/ssh-x/agent.1: connect: no such file or directory"
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return cfg, nil
}
