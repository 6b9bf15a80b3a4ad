// Command keyline runs the Keyline server (`keyline serve`) and is its
// command-line client, shaped like the ibmcloud commands: `keyline kp ...`,
// `keyline iam ...`, `keyline resource ...`, `keyline es ...`, `keyline events`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

// Exit codes scripts can rely on.
const (
	exitOK       = 0
	exitFailure  = 1 // the API refused or failed
	exitUsage    = 2 // the command line is wrong
	exitNotFound = 3 // the named thing does not exist
)

type usageError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	root.SetContext(ctx)
	err := root.ExecuteContext(ctx)
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	err = explainTLS(err)
	fmt.Fprintln(stderr, "FAILED")
	fmt.Fprintln(stderr, err)
	var ue usageError
	var ae *client.Error
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ae) && ae.Status == 404:
		return exitNotFound
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"),
		strings.Contains(err.Error(), "accepts ") && strings.Contains(err.Error(), "arg(s)"):
		return exitUsage
	}
	return exitFailure
}

// cli is the state every client command shares.
type cli struct {
	in          io.Reader // where confirmations are read (os.Stdin)
	out, errOut io.Writer
	output      string // "" (tables) or "json"
	endpoint    string
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	c := &cli{in: os.Stdin, out: out, errOut: errOut}
	root := &cobra.Command{
		Use:           "keyline",
		Short:         "Keyline: bring your own key for event streaming",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch strings.ToLower(c.output) {
			case "":
			case "json":
				c.output = "json"
			default:
				return usageError{fmt.Errorf("--output %s is not a format: the only one is json (the default is tables)", c.output)}
			}
			if c.endpoint != "" {
				u, err := endpointURL(c.endpoint)
				if err != nil {
					return usageError{err}
				}
				c.endpoint = u
			}
			return nil
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.PersistentFlags().StringVar(&c.output, "output", "", "output format: json (default: tables)")
	root.PersistentFlags().StringVarP(&c.endpoint, "api-endpoint", "a", "", "Keyline URL or host:port (default: from 'keyline login', or KEYLINE_ENDPOINT, or http://127.0.0.1:8080)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCmd(c), newLoginCmd(c), newIAMCmd(c), newResourceCmd(c), newKPCmd(c), newEventsCmd(c))
	root.AddCommand(newOperatorCmd(c), newClusterCmd(c), newESCmd(c))
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every group below the root (kp, kp key,
// iam, resource) answer a word that is none of its commands with a usage
// error and suggestions, as cobra does for the root, instead of printing
// its help and succeeding. A group named alone still prints its help.
func refuseUnknownSubcommands(root *cobra.Command) {
	for _, cmd := range root.Commands() {
		if cmd.HasSubCommands() && !cmd.Runnable() {
			cmd.Args = cobra.ArbitraryArgs
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if cmd.SuggestionsMinimumDistance <= 0 {
					cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only on the root's path
				}
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
				}
				return usageError{fmt.Errorf("%s\n\nRun '%s --help' for its commands", msg, cmd.CommandPath())}
			}
		}
		refuseUnknownSubcommands(cmd)
	}
}

// endpointURL reads -a: a URL, or host[:port] without a scheme, which means
// http on a loopback address (a local server) and https anywhere else.
func endpointURL(s string) (string, error) {
	orig := strings.TrimSpace(s)
	s = orig
	if !strings.Contains(s, "://") {
		host := s
		if i := strings.IndexByte(host, '/'); i >= 0 {
			host = host[:i]
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		scheme := "https://"
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			scheme = "http://"
		}
		s = scheme + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-a %s is not a Keyline endpoint: give a URL such as https://keyline.example.com or host:port (http for a loopback address, https otherwise)", orig)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// config is what `keyline login` remembers, in ~/.keyline/config.json (0600).
type config struct {
	Endpoint string `json:"endpoint"`
	APIKey   string `json:"apikey"`
	// CACert is the file of the CA that signed the server's certificate,
	// trusted besides the system's roots (keyline login --cacert).
	CACert string `json:"cacert,omitempty"`
	// ESInstance is the GUID of the Event Streams instance that
	// `keyline es init` chose.
	ESInstance string `json:"es_instance,omitempty"`
}

func configPath() string {
	if dir := os.Getenv("KEYLINE_HOME"); dir != "" {
		return filepath.Join(dir, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".keyline", "config.json")
}

func loadConfig() config {
	var cfg config
	if data, err := os.ReadFile(configPath()); err == nil {
		json.Unmarshal(data, &cfg)
	}
	return cfg
}

func saveConfig(cfg config) error {
	path := configPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	return os.WriteFile(path, data, 0o600)
}

// client builds an API client from flags, environment and the saved login.
func (c *cli) client() *client.Client {
	cfg := loadConfig()
	endpoint := firstNonEmpty(c.endpoint, os.Getenv("KEYLINE_ENDPOINT"), cfg.Endpoint, "http://127.0.0.1:8080")
	apikey := firstNonEmpty(os.Getenv("KEYLINE_APIKEY"), cfg.APIKey)
	if u, err := endpointURL(endpoint); err == nil {
		endpoint = u
	}
	cl := client.New(endpoint, apikey)
	cl.HTTP.Transport = transport(cfg.CACert)
	return cl
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// printJSON writes v indented.
func (c *cli) printJSON(v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var x any
		if json.Unmarshal(raw, &x) == nil {
			v = x
		}
	}
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table prints rows under headers, aligned.
func (c *cli) table(headers []string, rows [][]string) {
	tw := tabwriter.NewWriter(c.out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// fields prints name: value pairs, aligned.
func (c *cli) fields(pairs ...[2]string) {
	tw := tabwriter.NewWriter(c.out, 0, 0, 3, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	tw.Flush()
}

func (c *cli) ok(format string, args ...any) {
	if c.output == "json" {
		return
	}
	fmt.Fprintln(c.out, "OK")
	if format != "" {
		fmt.Fprintf(c.out, format+"\n", args...)
	}
}

// ctx returns the command's context.
func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// str reads a string field from decoded JSON.
func str(m map[string]any, key string) string {
	switch v := m[key].(type) {
	case string:
		return v
	case nil:
		return ""
	case float64:
		return fmt.Sprint(int64(v))
	default:
		return fmt.Sprint(v)
	}
}
