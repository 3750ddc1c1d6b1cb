// Package config holds what every batchflow binary is configured with: the
// common flags of DESIGN.md §5 and their BATCHFLOW_* environment twins,
// the named targets (databases) and the logger. Secrets (target DSNs, the
// NATS password, credentials in a NATS URL) are redacted in every form the
// package prints: fmt verbs, slog and JSON.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v3"
)

// Defaults of the common flags.
const (
	DefaultNATSURL      = "nats://127.0.0.1:4222"
	DefaultNATSReplicas = 1
	DefaultPrefix       = "batchflow"
	DefaultLogFormat    = "text"
	DefaultLogLevel     = "info"
)

// Flag names.
const (
	flagNATSURL      = "nats-url"
	flagNATSCreds    = "nats-creds"
	flagNATSNKey     = "nats-nkey"
	flagNATSUser     = "nats-user"
	flagNATSPassword = "nats-password"
	flagNATSTLSCA    = "nats-tls-ca"
	flagNATSTLSCert  = "nats-tls-cert"
	flagNATSTLSKey   = "nats-tls-key"
	flagNATSReplicas = "nats-replicas"
	flagPrefix       = "prefix"
	flagTarget       = "target"
	flagLogFormat    = "log-format"
	flagLogLevel     = "log-level"
)

// Environment twins of the flags.
const (
	envNATSURL      = "BATCHFLOW_NATS_URL"
	envNATSCreds    = "BATCHFLOW_NATS_CREDS"
	envNATSNKey     = "BATCHFLOW_NATS_NKEY"
	envNATSUser     = "BATCHFLOW_NATS_USER"
	envNATSPassword = "BATCHFLOW_NATS_PASSWORD"
	envNATSTLSCA    = "BATCHFLOW_NATS_TLS_CA"
	envNATSTLSCert  = "BATCHFLOW_NATS_TLS_CERT"
	envNATSTLSKey   = "BATCHFLOW_NATS_TLS_KEY"
	envNATSReplicas = "BATCHFLOW_NATS_REPLICAS"
	envPrefix       = "BATCHFLOW_PREFIX"
	envTargets      = "BATCHFLOW_TARGETS"
	envLogFormat    = "BATCHFLOW_LOG_FORMAT"
	envLogLevel     = "BATCHFLOW_LOG_LEVEL"
)

const (
	categoryNATS    = "NATS"
	categoryTargets = "Targets"
	categoryLogging = "Logging"
)

// prefixPattern is the same rule as internal/bus applies to --prefix (a
// subject token that stays valid inside stream and bucket names); it is
// repeated here so config does not import bus, which builds on config.
var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// CommonFlags returns the common flags of DESIGN.md §5, --target included,
// for the planner and executor. The flags hold parse state: call it once
// per command tree. On a root command the flags are inherited by its
// subcommands.
func CommonFlags() []cli.Flag {
	return append(CommonFlagsWithoutTargets(), TargetFlag())
}

// CommonFlagsWithoutTargets returns the common flags but --target, for
// commands that never open a database (the watchdog, batchflow status).
// A command that uses them ignores BATCHFLOW_TARGETS, so one environment
// can serve every binary. A subcommand that needs targets under such a
// root adds TargetFlag.
func CommonFlagsWithoutTargets() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:     flagNATSURL,
			Usage:    "NATS server `URL`s, comma-separated",
			Value:    DefaultNATSURL,
			Sources:  cli.EnvVars(envNATSURL),
			Category: categoryNATS,
		},
		&cli.StringFlag{
			Name:      flagNATSCreds,
			Usage:     "NATS credentials `FILE` (JWT and nkey seed)",
			Sources:   cli.EnvVars(envNATSCreds),
			TakesFile: true,
			Category:  categoryNATS,
		},
		&cli.StringFlag{
			Name:      flagNATSNKey,
			Usage:     "NATS nkey seed `FILE`",
			Sources:   cli.EnvVars(envNATSNKey),
			TakesFile: true,
			Category:  categoryNATS,
		},
		&cli.StringFlag{
			Name:     flagNATSUser,
			Usage:    "NATS user `NAME` (with --" + flagNATSPassword + ")",
			Sources:  cli.EnvVars(envNATSUser),
			Category: categoryNATS,
		},
		&cli.StringFlag{
			Name:     flagNATSPassword,
			Usage:    "NATS `PASSWORD` (prefer " + envNATSPassword + ": command lines are visible to other users)",
			Sources:  cli.EnvVars(envNATSPassword),
			Category: categoryNATS,
		},
		&cli.StringFlag{
			Name:      flagNATSTLSCA,
			Usage:     "`FILE` of CA certificates to verify the NATS server with",
			Sources:   cli.EnvVars(envNATSTLSCA),
			TakesFile: true,
			Category:  categoryNATS,
		},
		&cli.StringFlag{
			Name:      flagNATSTLSCert,
			Usage:     "client certificate `FILE` for NATS (with --" + flagNATSTLSKey + ")",
			Sources:   cli.EnvVars(envNATSTLSCert),
			TakesFile: true,
			Category:  categoryNATS,
		},
		&cli.StringFlag{
			Name:      flagNATSTLSKey,
			Usage:     "client key `FILE` for NATS (with --" + flagNATSTLSCert + ")",
			Sources:   cli.EnvVars(envNATSTLSKey),
			TakesFile: true,
			Category:  categoryNATS,
		},
		&cli.IntFlag{
			Name:     flagNATSReplicas,
			Usage:    "`N` replicas of the streams and buckets batchflow creates, 1 to 5",
			Value:    DefaultNATSReplicas,
			Sources:  cli.EnvVars(envNATSReplicas),
			Category: categoryNATS,
		},
		&cli.StringFlag{
			Name:     flagPrefix,
			Usage:    "`PREFIX` of every stream, subject and bucket name",
			Value:    DefaultPrefix,
			Sources:  cli.EnvVars(envPrefix),
			Category: categoryNATS,
		},
		&cli.StringFlag{
			Name:     flagLogFormat,
			Usage:    "log `FORMAT`: text or json",
			Value:    DefaultLogFormat,
			Sources:  cli.EnvVars(envLogFormat),
			Category: categoryLogging,
		},
		&cli.StringFlag{
			Name:     flagLogLevel,
			Usage:    "log `LEVEL`: debug, info, warn or error",
			Value:    DefaultLogLevel,
			Sources:  cli.EnvVars(envLogLevel),
			Category: categoryLogging,
		},
	}
}

// TargetFlag returns the repeatable --target NAME=DSN flag alone.
//
// It is not a string slice flag: urfave/cli splits those on ',', which
// Postgres multi-host DSNs contain. BATCHFLOW_TARGETS is read by
// FromCommand rather than through the flag's sources because it is split
// on ';' and must lose to --target entirely; the flag only names it, so
// help shows it.
func TargetFlag() cli.Flag {
	return &cli.GenericFlag{
		Name:     flagTarget,
		Usage:    "database to run migrations on, as `NAME=DSN` (repeatable; replaces " + envTargets + " entirely)",
		Value:    &targetFlagValue{},
		Sources:  cli.ValueSourceChain{Chain: []cli.ValueSource{targetsEnvName{}}},
		Category: categoryTargets,
	}
}

// targetFlagValue collects the raw --target values. Set never fails:
// urfave/cli would quote the raw value, password included, in its error.
// FromCommand parses them.
type targetFlagValue struct{ entries []string }

func (v *targetFlagValue) Set(s string) error {
	v.entries = append(v.entries, s)
	return nil
}

func (v *targetFlagValue) Get() any {
	if v == nil {
		return []string(nil)
	}
	return append([]string(nil), v.entries...)
}

// String is empty: help prints it as the flag's default, and --target
// has none (after parsing it would otherwise show the given values).
func (v *targetFlagValue) String() string { return "" }

// targetsEnvName names BATCHFLOW_TARGETS in help without ever supplying a
// value; see TargetFlag.
type targetsEnvName struct{}

func (targetsEnvName) Lookup() (string, bool) { return "", false }
func (targetsEnvName) IsFromEnv() bool        { return true }
func (targetsEnvName) Key() string            { return envTargets }
func (targetsEnvName) String() string         { return fmt.Sprintf("environment variable %q", envTargets) }
func (targetsEnvName) GoString() string {
	return fmt.Sprintf("&targetsEnvName{Key:%q}", envTargets)
}

// Common is the configuration every binary shares. Printing it (fmt,
// slog, JSON) shows the NATS password as "xxxxx", credentials in the NATS
// URL redacted and target DSNs redacted.
type Common struct {
	// NATSURL is one or more comma-separated server URLs. Default DefaultNATSURL.
	NATSURL string
	// NATSURLExplicit reports that --nats-url or BATCHFLOW_NATS_URL was
	// given rather than defaulted: batchflow run embeds a server otherwise.
	NATSURLExplicit bool
	// NATSCreds is a credentials file (JWT and nkey seed).
	NATSCreds string
	// NATSNKey is an nkey seed file.
	NATSNKey string
	// NATSUser and NATSPassword authenticate by name and password; both or neither.
	NATSUser, NATSPassword string
	// NATSTLSCA verifies the server; NATSTLSCert and NATSTLSKey, both or
	// neither, are the client certificate.
	NATSTLSCA, NATSTLSCert, NATSTLSKey string
	// NATSReplicas is the replica count of the streams and buckets
	// batchflow creates, 1 to 5. Default 1.
	NATSReplicas int
	// Prefix prefixes every NATS name (DESIGN.md §3). Default "batchflow".
	Prefix string
	// Targets are the databases this process may run migrations on; empty
	// for commands built without TargetFlag.
	Targets Targets
	// LogFormat is "text" or "json"; LogLevel is "debug", "info", "warn"
	// or "error". Defaults "text" and "info".
	LogFormat, LogLevel string
}

// FromCommand reads and validates the common flags of cmd or its
// ancestors. Targets come from --target, or from BATCHFLOW_TARGETS when no
// --target was given, and only when cmd or an ancestor has TargetFlag.
// Values are trimmed; log format and level are lowercased.
func FromCommand(cmd *cli.Command) (Common, error) {
	c := Common{
		NATSURL:         strings.TrimSpace(cmd.String(flagNATSURL)),
		NATSURLExplicit: cmd.IsSet(flagNATSURL),
		NATSCreds:       strings.TrimSpace(cmd.String(flagNATSCreds)),
		NATSNKey:        strings.TrimSpace(cmd.String(flagNATSNKey)),
		NATSUser:        cmd.String(flagNATSUser),
		NATSPassword:    cmd.String(flagNATSPassword),
		NATSTLSCA:       strings.TrimSpace(cmd.String(flagNATSTLSCA)),
		NATSTLSCert:     strings.TrimSpace(cmd.String(flagNATSTLSCert)),
		NATSTLSKey:      strings.TrimSpace(cmd.String(flagNATSTLSKey)),
		NATSReplicas:    cmd.Int(flagNATSReplicas),
		Prefix:          strings.TrimSpace(cmd.String(flagPrefix)),
		LogFormat:       strings.ToLower(strings.TrimSpace(cmd.String(flagLogFormat))),
		LogLevel:        strings.ToLower(strings.TrimSpace(cmd.String(flagLogLevel))),
	}
	if v := targetFlagOf(cmd); v != nil {
		targets, err := ParseTargets(v.entries, os.Getenv(envTargets))
		if err != nil {
			return Common{}, err
		}
		c.Targets = targets
	}
	if err := c.Validate(); err != nil {
		return Common{}, err
	}
	return c, nil
}

// targetFlagOf finds the --target flag's value on cmd or an ancestor,
// without cmd.Value, which reports a missing flag to the command's
// InvalidFlagAccessHandler.
func targetFlagOf(cmd *cli.Command) *targetFlagValue {
	for _, c := range cmd.Lineage() {
		for _, f := range c.Flags {
			if g, ok := f.(*cli.GenericFlag); ok && g.Name == flagTarget {
				if v, ok := g.Value.(*targetFlagValue); ok {
					return v
				}
			}
		}
	}
	return nil
}

// WithDefaults returns c with the documented defaults in its zero fields,
// for programs that build a Common without the flags.
func (c Common) WithDefaults() Common {
	if c.NATSURL == "" {
		c.NATSURL = DefaultNATSURL
	}
	if c.NATSReplicas == 0 {
		c.NATSReplicas = DefaultNATSReplicas
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	return c
}

// flagRef names a flag with its environment twin for error messages:
// urfave/cli merges the two, so either may have supplied a bad value.
type flagRef struct{ flag, env string }

func (r flagRef) String() string { return "--" + r.flag + " (" + r.env + ")" }

var (
	refNATSURL      = flagRef{flagNATSURL, envNATSURL}
	refNATSCreds    = flagRef{flagNATSCreds, envNATSCreds}
	refNATSNKey     = flagRef{flagNATSNKey, envNATSNKey}
	refNATSUser     = flagRef{flagNATSUser, envNATSUser}
	refNATSPassword = flagRef{flagNATSPassword, envNATSPassword}
	refNATSTLSCA    = flagRef{flagNATSTLSCA, envNATSTLSCA}
	refNATSTLSCert  = flagRef{flagNATSTLSCert, envNATSTLSCert}
	refNATSTLSKey   = flagRef{flagNATSTLSKey, envNATSTLSKey}
	refNATSReplicas = flagRef{flagNATSReplicas, envNATSReplicas}
	refPrefix       = flagRef{flagPrefix, envPrefix}
	refLogFormat    = flagRef{flagLogFormat, envLogFormat}
	refLogLevel     = flagRef{flagLogLevel, envLogLevel}
)

// Validate reports every invalid setting at once, each naming the flag and
// its environment twin.
func (c Common) Validate() error {
	var errs []error
	add := func(ref flagRef, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", ref, fmt.Sprintf(format, args...)))
	}
	if err := checkNATSURL(c.NATSURL); err != nil {
		add(refNATSURL, "%v", err)
	}
	for _, f := range []struct {
		ref  flagRef
		path string
	}{
		{refNATSCreds, c.NATSCreds},
		{refNATSNKey, c.NATSNKey},
		{refNATSTLSCA, c.NATSTLSCA},
		{refNATSTLSCert, c.NATSTLSCert},
		{refNATSTLSKey, c.NATSTLSKey},
	} {
		if f.path == "" {
			continue
		}
		// Checked now so that a typo fails at start, naming the flag,
		// rather than at connect time in the NATS client's words.
		if st, err := os.Stat(f.path); err != nil {
			add(f.ref, "%v", err)
		} else if st.IsDir() {
			add(f.ref, "%s is a directory, not a file", f.path)
		}
	}
	switch {
	case c.NATSUser != "" && c.NATSPassword == "":
		add(refNATSUser, "needs %s", refNATSPassword)
	case c.NATSUser == "" && c.NATSPassword != "":
		add(refNATSPassword, "needs %s", refNATSUser)
	}
	// The NATS client would send more than one of these and the server
	// would pick one: say which instead of guessing.
	var auths []flagRef
	if c.NATSCreds != "" {
		auths = append(auths, refNATSCreds)
	}
	if c.NATSNKey != "" {
		auths = append(auths, refNATSNKey)
	}
	if c.NATSUser != "" || c.NATSPassword != "" {
		auths = append(auths, refNATSUser)
	}
	if len(auths) > 1 {
		add(auths[0], "cannot be combined with %s: use one way to authenticate", auths[1])
	}
	switch {
	case c.NATSTLSCert != "" && c.NATSTLSKey == "":
		add(refNATSTLSCert, "needs %s", refNATSTLSKey)
	case c.NATSTLSCert == "" && c.NATSTLSKey != "":
		add(refNATSTLSKey, "needs %s", refNATSTLSCert)
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		add(refNATSReplicas, "invalid replica count %d: use 1 to 5", c.NATSReplicas)
	}
	if !prefixPattern.MatchString(c.Prefix) {
		add(refPrefix, "invalid prefix %q: use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter", c.Prefix)
	}
	if _, err := parseLogFormat(c.LogFormat); err != nil || c.LogFormat == "" {
		add(refLogFormat, "invalid log format %q: use text or json", c.LogFormat)
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		add(refLogLevel, "invalid log level %q: use debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// checkNATSURL accepts what the NATS client accepts: comma-separated
// URLs, "nats://" assumed when the scheme is missing.
func checkNATSURL(urls string) error {
	if strings.TrimSpace(urls) == "" {
		return errors.New("no server URL")
	}
	for raw := range strings.SplitSeq(urls, ",") {
		raw = strings.TrimSpace(raw)
		full := raw
		if !strings.Contains(raw, "://") {
			full = "nats://" + raw
		}
		u, err := url.Parse(full)
		if err != nil || u.Hostname() == "" {
			// url.Parse's error quotes the raw URL, credentials included.
			return fmt.Errorf("malformed server URL %q", redactNATSURL(raw))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("unknown scheme %q in %q: use nats://, tls://, ws:// or wss://", u.Scheme, redactNATSURL(raw))
		}
	}
	return nil
}

// redactNATSURL hides the credentials of each URL in a NATS server list.
// Unlike in a DSN, user info without a colon is a token, so all of it is
// a secret: nats://s3cret@host becomes nats://xxxxx@host.
func redactNATSURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		prefix, rest := splitScheme(p, schemePattern)
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			continue
		}
		userinfo, host := rest[:at], rest[at:]
		if user, _, ok := strings.Cut(userinfo, ":"); ok {
			parts[i] = prefix + user + ":" + redacted + host
		} else {
			parts[i] = prefix + redacted + host
		}
	}
	return strings.Join(parts, ",")
}

// redactSecret shows whether a secret is set without showing it.
func redactSecret(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// String prints the settings as the flags would be written, skipping
// empty ones, with secrets redacted.
func (c Common) String() string {
	var b strings.Builder
	put := func(key, value string) {
		if value == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if strings.ContainsAny(value, " \t\"") {
			value = strconv.Quote(value)
		}
		b.WriteString(key + "=" + value)
	}
	put(flagNATSURL, redactNATSURL(c.NATSURL))
	put(flagNATSCreds, c.NATSCreds)
	put(flagNATSNKey, c.NATSNKey)
	put(flagNATSUser, c.NATSUser)
	put(flagNATSPassword, redactSecret(c.NATSPassword))
	put(flagNATSTLSCA, c.NATSTLSCA)
	put(flagNATSTLSCert, c.NATSTLSCert)
	put(flagNATSTLSKey, c.NATSTLSKey)
	put(flagNATSReplicas, strconv.Itoa(c.NATSReplicas))
	put(flagPrefix, c.Prefix)
	if len(c.Targets) > 0 {
		put("targets", c.Targets.String())
	}
	put(flagLogFormat, c.LogFormat)
	put(flagLogLevel, c.LogLevel)
	return b.String()
}

// GoString makes %#v print the redacted values.
func (c Common) GoString() string {
	return fmt.Sprintf("config.Common{NATSURL:%q, NATSURLExplicit:%t, NATSCreds:%q, NATSNKey:%q, NATSUser:%q, NATSPassword:%q, "+
		"NATSTLSCA:%q, NATSTLSCert:%q, NATSTLSKey:%q, NATSReplicas:%d, Prefix:%q, Targets:%s, LogFormat:%q, LogLevel:%q}",
		redactNATSURL(c.NATSURL), c.NATSURLExplicit, c.NATSCreds, c.NATSNKey, c.NATSUser, redactSecret(c.NATSPassword),
		c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey, c.NATSReplicas, c.Prefix, c.Targets.GoString(), c.LogFormat, c.LogLevel)
}

// Format routes every verb through String or GoString, as Target.Format.
func (c Common) Format(f fmt.State, verb rune) { format(f, verb, c.String(), c.GoString()) }

// LogValue logs the settings as a group, secrets redacted, so a process
// can log its configuration at start.
func (c Common) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redactNATSURL(c.NATSURL)),
		slog.String("nats_creds", c.NATSCreds),
		slog.String("nats_nkey", c.NATSNKey),
		slog.String("nats_user", c.NATSUser),
		slog.String("nats_password", redactSecret(c.NATSPassword)),
		slog.String("nats_tls_ca", c.NATSTLSCA),
		slog.String("nats_tls_cert", c.NATSTLSCert),
		slog.String("nats_tls_key", c.NATSTLSKey),
		slog.Int("nats_replicas", c.NATSReplicas),
		slog.String("prefix", c.Prefix),
		slog.Any("targets", c.Targets),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel),
	)
}

// MarshalJSON encodes the settings with secrets redacted.
func (c Common) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		NATSURL      string  `json:"nats_url"`
		NATSCreds    string  `json:"nats_creds,omitempty"`
		NATSNKey     string  `json:"nats_nkey,omitempty"`
		NATSUser     string  `json:"nats_user,omitempty"`
		NATSPassword string  `json:"nats_password,omitempty"`
		NATSTLSCA    string  `json:"nats_tls_ca,omitempty"`
		NATSTLSCert  string  `json:"nats_tls_cert,omitempty"`
		NATSTLSKey   string  `json:"nats_tls_key,omitempty"`
		NATSReplicas int     `json:"nats_replicas"`
		Prefix       string  `json:"prefix"`
		Targets      Targets `json:"targets"`
		LogFormat    string  `json:"log_format"`
		LogLevel     string  `json:"log_level"`
	}{
		NATSURL:      redactNATSURL(c.NATSURL),
		NATSCreds:    c.NATSCreds,
		NATSNKey:     c.NATSNKey,
		NATSUser:     c.NATSUser,
		NATSPassword: redactSecret(c.NATSPassword),
		NATSTLSCA:    c.NATSTLSCA,
		NATSTLSCert:  c.NATSTLSCert,
		NATSTLSKey:   c.NATSTLSKey,
		NATSReplicas: c.NATSReplicas,
		Prefix:       c.Prefix,
		Targets:      c.Targets,
		LogFormat:    c.LogFormat,
		LogLevel:     c.LogLevel,
	})
}
