// Package bus is batchflow's NATS plumbing: the names of DESIGN.md §3 derived
// from a prefix, connecting from the common flags, idempotent creation of the
// streams, consumers and key-value buckets, and the trace header carrier.
package bus

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultPrefix is the prefix of every NATS name when --prefix is not given.
const DefaultPrefix = "batchflow"

// Fixed consumer names of DESIGN.md §3 and §8.
const (
	ExecutorsConsumer = "executors"
	PlannerConsumer   = "planner"
)

// prefixPattern keeps a prefix usable as a subject token, inside stream names
// (upper-cased) and inside bucket names, which allow only [A-Za-z0-9_-].
var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// Names holds every NATS name batchflow uses under one prefix.
//
// With the default prefix "batchflow":
//
//	EnqueueStream  BATCHFLOW_ENQUEUE   subject batchflow.enqueue
//	BatchStream    BATCHFLOW_BATCHES   subjects batchflow.batches.<migration>
//	EventStream    BATCHFLOW_EVENTS    subjects batchflow.events.>
//	MigrationsKV   batchflow_migrations
//	BatchesKV      batchflow_batches
//	LeasesKV       batchflow_leases   (who leads among the planners)
//	API subjects   batchflow.api.<verb> (control requests to the leading planner)
type Names struct {
	Prefix string

	EnqueueStream  string
	EnqueueSubject string

	BatchStream string
	// BatchSubjects is the batch stream's subject filter, "<prefix>.batches.>".
	BatchSubjects string

	EventStream string
	// EventSubjects is the event stream's subject filter, "<prefix>.events.>".
	EventSubjects string

	// AdvisoryStream captures the JetStream advisories of the batch stream
	// (max deliveries, terminated messages), which the server sends only
	// while someone listens; the watchdog reads them from here.
	AdvisoryStream string

	MigrationsKV string
	BatchesKV    string
	// LeasesKV holds the leases that elect one leader among several
	// planners (and watchdogs): key "planner", value the holder.
	LeasesKV string
}

// NewNames derives the names for prefix; an empty prefix means DefaultPrefix.
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(prefix) {
		return Names{}, fmt.Errorf("invalid prefix %q: use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter", prefix)
	}
	upper := strings.ToUpper(prefix)
	return Names{
		Prefix:         prefix,
		EnqueueStream:  upper + "_ENQUEUE",
		EnqueueSubject: prefix + ".enqueue",
		BatchStream:    upper + "_BATCHES",
		BatchSubjects:  prefix + ".batches.>",
		EventStream:    upper + "_EVENTS",
		EventSubjects:  prefix + ".events.>",
		AdvisoryStream: upper + "_ADVISORIES",
		MigrationsKV:   prefix + "_migrations",
		BatchesKV:      prefix + "_batches",
		LeasesKV:       prefix + "_leases",
	}, nil
}

// MustNames is NewNames for prefixes known to be valid, such as constants.
func MustNames(prefix string) Names {
	n, err := NewNames(prefix)
	if err != nil {
		panic(err)
	}
	return n
}

// BatchSubject is the subject a batch of migration is published on.
func (n Names) BatchSubject(migration string) string {
	return n.Prefix + ".batches." + migration
}

// BatchMsgID is the JetStream message id of a batch publish,
// "<migration>.<seq>.<epoch>": a republish with a new epoch is not
// swallowed by the stream's duplicate window.
func BatchMsgID(migration string, seq, epoch int64) string {
	return fmt.Sprintf("%s.%d.%d", migration, seq, epoch)
}

// BatchKey is the key of a batch's record in the batches bucket, "<migration>.<seq>".
func BatchKey(migration string, seq int64) string {
	return fmt.Sprintf("%s.%d", migration, seq)
}

// AdvisorySubjects are the advisory subjects captured in AdvisoryStream.
func (n Names) AdvisorySubjects() []string {
	return []string{
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + n.BatchStream + "." + ExecutorsConsumer,
		"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + n.BatchStream + "." + ExecutorsConsumer,
	}
}

// APISubject is the subject of a control request ("pause", "set", …),
// answered by the leading planner.
func (n Names) APISubject(verb string) string {
	return n.Prefix + ".api." + verb
}

// TermReason is the reason an executor terminates a batch's message with.
// A terminated message leaves the work-queue stream at once, so the reason,
// which the server repeats in its advisory, is what names the batch to the
// watchdog: "batch <migration>.<seq> epoch <epoch>: <why>".
func TermReason(migration string, seq, epoch int64, why string) string {
	return fmt.Sprintf("batch %s epoch %d: %s", BatchKey(migration, seq), epoch, why)
}

// ParseTermReason reads a TermReason back.
func ParseTermReason(reason string) (migration string, seq, epoch int64, why string, ok bool) {
	head, why, found := strings.Cut(reason, ": ")
	if !found {
		return "", 0, 0, "", false
	}
	var key string
	if _, err := fmt.Sscanf(head, "batch %s epoch %d", &key, &epoch); err != nil {
		return "", 0, 0, "", false
	}
	dot := strings.LastIndexByte(key, '.')
	if dot < 0 {
		return "", 0, 0, "", false
	}
	if _, err := fmt.Sscan(key[dot+1:], &seq); err != nil {
		return "", 0, 0, "", false
	}
	return key[:dot], seq, epoch, why, true
}
