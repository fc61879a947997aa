package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
)

type runSpec struct {
	conn    connection
	command string
	stdin   *string
	env     map[string]string // `environment`: set with SSH "env" requests (server needs AcceptEnv)
	prevEnv map[string]string // PULUMI_COMMAND_STDOUT/STDERR of the previous run
	logging string            // which streams to echo to the engine as status lines
	urn     string
}

// errPermanent marks dial errors that retrying cannot fix (host key mismatch, authentication).
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

const tailBytes = 4096

// runRemote runs spec.command on the host over one SSH session and returns its trimmed stdout and stderr.
func (p *provider) runRemote(ctx context.Context, spec runSpec) (string, string, error) {
	client, err := dial(ctx, spec.conn)
	if err != nil {
		return "", "", err
	}
	defer client.Close()

	sess, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("opening an SSH session on %s: %w", spec.conn.host, err)
	}
	defer sess.Close()

	for _, k := range sortedKeys(spec.env) {
		if err := sess.Setenv(k, spec.env[k]); err != nil {
			p.log(ctx, spec.urn, pulumirpc.LogSeverity_WARNING, fmt.Sprintf(
				"Unable to set environment variable %q on %s: the SSH server must accept it with AcceptEnv. "+
					"Alternatively prefix the command with VAR=value.", k, spec.conn.host), false)
		}
	}
	for _, k := range sortedKeys(spec.prevEnv) {
		_ = sess.Setenv(k, spec.prevEnv[k]) // best effort, silently (servers rarely AcceptEnv PULUMI_*)
	}
	if spec.stdin != nil {
		sess.Stdin = strings.NewReader(*spec.stdin)
	}
	var stdout, stderr bytes.Buffer
	mode := spec.logging
	if mode == "" {
		mode = "stdoutAndStderr"
	}
	sess.Stdout = p.tee(ctx, &stdout, spec.urn, mode == "stdout" || mode == "stdoutAndStderr")
	sess.Stderr = p.tee(ctx, &stderr, spec.urn, mode == "stderr" || mode == "stdoutAndStderr")

	done := make(chan error, 1)
	go func() { done <- sess.Run(spec.command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL) // OpenSSH ignores this before 8.1; closing the connection follows anyway
		_ = client.Close()
		<-done
		return "", "", fmt.Errorf("command on %s cancelled: %w", spec.conn.host, ctx.Err())
	}
	out := strings.TrimSuffix(stdout.String(), "\n")
	errOut := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		var exitErr *ssh.ExitError
		var missing *ssh.ExitMissingError
		reason := err.Error()
		switch {
		case errors.As(err, &exitErr):
			reason = fmt.Sprintf("Process exited with status %d", exitErr.ExitStatus())
			if sig := exitErr.Signal(); sig != "" {
				reason += " (signal " + sig + ")"
			}
		case errors.As(err, &missing):
			reason = "Process exited without an exit status (killed, or the connection dropped)"
		}
		return out, errOut, fmt.Errorf("%s: running command on %s@%s:%d\nstderr:\n%s\nstdout:\n%s",
			reason, spec.conn.user, spec.conn.host, spec.conn.port, tail(errOut), tail(out))
	}
	return out, errOut, nil
}

func tail(s string) string {
	if len(s) <= tailBytes {
		return s
	}
	return "…" + s[len(s)-tailBytes:]
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// dial connects and authenticates, retrying failed dials up to conn.dialErrorLimit times (-1: forever).
func dial(ctx context.Context, c connection) (*ssh.Client, error) {
	cfg, err := clientConfig(c)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	var lastErr error
	for attempt := 1; ; attempt++ {
		client, err := dialOnce(ctx, addr, cfg, c.perDialTimeout)
		if err == nil {
			return client, nil
		}
		lastErr = err
		var perm errPermanent
		if errors.As(err, &perm) || ctx.Err() != nil {
			return nil, err
		}
		if c.dialErrorLimit >= 0 && attempt >= c.dialErrorLimit {
			break
		}
		delay := time.Duration(attempt) * 500 * time.Millisecond
		if delay > 5*time.Second {
			delay = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing %s: %w (last error: %v)", addr, ctx.Err(), lastErr)
		case <-time.After(delay):
		}
	}
	return nil, fmt.Errorf("failed to dial %s after %d attempts (dialErrorLimit): %w", addr, c.dialErrorLimit, lastErr)
}

func dialOnce(ctx context.Context, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	d := net.Dialer{Timeout: timeout}
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		_ = tcp.SetDeadline(time.Now().Add(timeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = tcp.Close() })
	conn, chans, reqs, err := ssh.NewClientConn(tcp, addr, cfg)
	stop()
	if err != nil {
		_ = tcp.Close()
		var mismatch *hostKeyMismatch
		switch {
		case errors.As(err, &mismatch):
			return nil, errPermanent{mismatch}
		case strings.Contains(err.Error(), "no common algorithm for host key"):
			return nil, errPermanent{fmt.Errorf("host key verification failed for %s: the server offers no host key "+
				"of the type given in connection.hostKey (%v)", addr, err)}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, errPermanent{fmt.Errorf("SSH authentication to %s as %q failed: %w", addr, cfg.User, err)}
		}
		return nil, err
	}
	_ = tcp.SetDeadline(time.Time{})
	return ssh.NewClient(conn, chans, reqs), nil
}

type hostKeyMismatch struct {
	addr      string
	want, got ssh.PublicKey
}

func (e *hostKeyMismatch) Error() string {
	return fmt.Sprintf("host key verification failed for %s: connection.hostKey is %s %s but the server presented %s %s",
		e.addr, e.want.Type(), ssh.FingerprintSHA256(e.want), e.got.Type(), ssh.FingerprintSHA256(e.got))
}

func clientConfig(c connection) (*ssh.ClientConfig, error) {
	cfg := &ssh.ClientConfig{User: c.user, Timeout: c.perDialTimeout}
	if c.privateKey != "" {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey), []byte(c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("connection.privateKey: %w", err) // never echoes the key
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != "" {
		pw := c.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(cfg.Auth) == 0 {
		return nil, errors.New("no SSH credentials: set connection.privateKey or connection.password " +
			"(SSH agents are not supported by nixfleet's stand-in provider)")
	}
	if c.hostKey == "" {
		// Same as pulumi-command: without hostKey the server's key is NOT verified.
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // documented behaviour
		return cfg, nil
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
	if err != nil {
		return nil, fmt.Errorf("connection.hostKey is not an authorized_keys line such as \"ssh-ed25519 AAAA…\": %w", err)
	}
	cfg.HostKeyAlgorithms = hostKeyAlgorithms(want.Type())
	cfg.HostKeyCallback = func(hostname string, _ net.Addr, got ssh.PublicKey) error {
		if bytes.Equal(got.Marshal(), want.Marshal()) {
			return nil
		}
		return &hostKeyMismatch{addr: hostname, want: want, got: got}
	}
	return cfg, nil
}

// hostKeyAlgorithms makes the server present the key of the pinned type (a server usually has several).
func hostKeyAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// ---- engine logging ------------------------------------------------------------------------------------------

func (p *provider) log(ctx context.Context, urn string, sev pulumirpc.LogSeverity, msg string, ephemeral bool) {
	if p.engine == nil {
		return
	}
	_, _ = p.engine.Log(ctx, &pulumirpc.LogRequest{Severity: sev, Message: msg, Urn: urn, Ephemeral: ephemeral})
}

// tee captures a stream and, if echo is set, forwards complete lines to the engine as ephemeral status lines
// (shown while the command runs, like the real provider's `logging` option).
func (p *provider) tee(ctx context.Context, buf *bytes.Buffer, urn string, echo bool) io.Writer {
	if !echo || p.engine == nil {
		return buf
	}
	return &lineLogger{buf: buf, emit: func(line string) {
		p.log(ctx, urn, pulumirpc.LogSeverity_INFO, line, true)
	}}
}

type lineLogger struct {
	mu      sync.Mutex
	buf     *bytes.Buffer
	pending []byte
	emit    func(string)
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	l.pending = append(l.pending, b...)
	for {
		i := bytes.IndexByte(l.pending, '\n')
		if i < 0 {
			break
		}
		l.emit(string(l.pending[:i]))
		l.pending = l.pending[i+1:]
	}
	return len(b), nil
}
