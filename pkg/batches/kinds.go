package batches

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// The stock kinds of DESIGN.md §2, run by the stock executor with no code.
const (
	KindSQL              = "sql"
	KindBackfillColumn   = "backfill_column"
	KindCopyColumn       = "copy_column"
	KindDeleteAssociated = "delete_associated"
	KindDeleteOrphaned   = "delete_orphaned"
	KindPerformAction    = "perform_action"
	KindResetCounters    = "reset_counters"
)

// SQLArgs are the arguments of KindSQL: exactly one of Set and Statement.
type SQLArgs struct {
	// Set is a SET clause: each sub-batch runs UPDATE t SET <set> WHERE
	// <key range> AND <where>. Trusted SQL.
	Set string `json:"set,omitempty"`
	// Statement is a whole statement with :lo and :hi placeholders, bound to
	// the sub-batch's exclusive lower and inclusive upper key. Trusted SQL.
	Statement string `json:"statement,omitempty"`
}

// BackfillColumnArgs are the arguments of KindBackfillColumn.
type BackfillColumnArgs struct {
	// Updates maps columns to the values to write. Rows already at every
	// value are skipped (NULL-safe), so a re-run touches nothing.
	Updates map[string]any `json:"updates"`
}

// CopyColumnArgs are the arguments of KindCopyColumn: To[i] = From[i].
type CopyColumnArgs struct {
	From []string `json:"from"`
	To   []string `json:"to"`
	// Cast maps a To column to the SQL type its value is cast to, from the
	// dialect's allowlist ("bigint", "text", …).
	Cast map[string]string `json:"cast,omitempty"`
}

// DeleteAssociatedArgs are the arguments of KindDeleteAssociated: delete the
// rows whose ForeignKey equals ParentID.
type DeleteAssociatedArgs struct {
	ParentID   Key    `json:"parent_id"`
	ForeignKey string `json:"foreign_key"`
}

// DeleteOrphanedArgs are the arguments of KindDeleteOrphaned: delete the
// rows whose reference, in any association, points at a missing row.
type DeleteOrphanedArgs struct {
	Associations []Association `json:"associations"`
}

// Association is a column referencing another table's column.
type Association struct {
	Column string `json:"column"`
	// References is "table.column" or "schema.table.column".
	References string `json:"references"`
}

// Referenced splits References into table (possibly schema-qualified) and column.
func (a Association) Referenced() (table, column string) {
	i := strings.LastIndexByte(a.References, '.')
	if i < 0 {
		return "", a.References
	}
	return a.References[:i], a.References[i+1:]
}

// Actions of KindPerformAction.
const (
	ActionUpdateAll = "update_all"
	ActionDeleteAll = "delete_all"
)

// PerformActionArgs are the arguments of KindPerformAction.
type PerformActionArgs struct {
	Action  string         `json:"action"`
	Updates map[string]any `json:"updates,omitempty"`
}

// ResetCountersArgs are the arguments of KindResetCounters.
type ResetCountersArgs struct {
	Counters []Counter `json:"counters"`
	// Touch names a timestamp column set to the current time on every reset
	// row; in JSON, true means "updated_at".
	Touch string `json:"touch,omitempty"`
}

// Counter is a counter-cache column recomputed as the number of rows of
// ChildTable whose ForeignKey points at the row.
type Counter struct {
	Column     string `json:"column"`
	ChildTable string `json:"child_table"`
	ForeignKey string `json:"foreign_key"`
}

// DecodeArgs decodes the spec's arguments into the typed arguments of its
// stock kind (a *SQLArgs for KindSQL, …), strictly. Executors call it on
// specs that passed Validate.
func DecodeArgs[T any](s Spec) (T, error) {
	var out T
	dec := json.NewDecoder(bytes.NewReader(argsOrEmpty(s.Args)))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return out, fmt.Errorf("decode args of %s: %w", s.Kind, err)
	}
	return out, nil
}

func argsOrEmpty(a json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(a)) == 0 || isNull(a) {
		return json.RawMessage("{}")
	}
	return a
}

// ArgsCheck validates a kind's raw arguments statically and returns every problem.
type ArgsCheck func(args json.RawMessage) []Problem

type kindEntry struct {
	check ArgsCheck
	stock bool
}

var (
	kindsMu sync.RWMutex
	kinds   = map[string]kindEntry{
		KindSQL:              {checkSQLArgs, true},
		KindBackfillColumn:   {checkBackfillArgs, true},
		KindCopyColumn:       {checkCopyArgs, true},
		KindDeleteAssociated: {checkDeleteAssociatedArgs, true},
		KindDeleteOrphaned:   {checkDeleteOrphanedArgs, true},
		KindPerformAction:    {checkPerformActionArgs, true},
		KindResetCounters:    {checkResetCountersArgs, true},
	}
	kindNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// RegisterKind makes a custom kind known to Validate in this process, with
// an optional check of its arguments (nil accepts any JSON object). Custom
// executors register their kinds at start; so must any planner that accepts
// them. It panics on a malformed name or a clash with a stock kind, like
// sql.Register: both are programming errors.
func RegisterKind(name string, check ArgsCheck) {
	if !kindNamePattern.MatchString(name) {
		panic(fmt.Sprintf("batches: invalid kind name %q: use lowercase letters, digits and '_'", name))
	}
	if check == nil {
		check = func(json.RawMessage) []Problem { return nil }
	}
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if k, ok := kinds[name]; ok && k.stock {
		panic(fmt.Sprintf("batches: kind %q is a stock kind", name))
	}
	kinds[name] = kindEntry{check: check}
}

// AcceptKind makes a custom kind name known to Validate, accepting any
// arguments, unless the kind is known already (a registration with an
// argument check is kept). Planners call it for kinds their executors provide.
func AcceptKind(name string) error {
	if !kindNamePattern.MatchString(name) {
		return fmt.Errorf("invalid kind name %q: use lowercase letters, digits and '_'", name)
	}
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if _, ok := kinds[name]; !ok {
		kinds[name] = kindEntry{check: func(json.RawMessage) []Problem { return nil }}
	}
	return nil
}

// StockKinds lists the stock kinds, sorted.
func StockKinds() []string {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	var names []string
	for name, k := range kinds {
		if k.stock {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// KnownKind reports whether name is a stock or registered kind.
func KnownKind(name string) bool {
	_, ok := lookupKind(name)
	return ok
}

func lookupKind(name string) (kindEntry, bool) {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// The checks below decode args field by field (so every problem is
// reported) and check shapes and identifiers. Whether the columns exist and
// the types fit is checked against the live schema by the planner.

func checkSQLArgs(raw json.RawMessage) []Problem {
	var a SQLArgs
	v := argsValidator(raw, map[string]fieldDecoder{
		"set":       stringField(&a.Set),
		"statement": stringField(&a.Statement),
	})
	if len(v.problems) > 0 {
		return v.problems
	}
	set, stmt := strings.TrimSpace(a.Set), strings.TrimSpace(a.Statement)
	switch {
	case set == "" && stmt == "":
		v.add("args", "the sql kind needs args.set (a SET clause) or args.statement (a statement with :lo and :hi)")
	case set != "" && stmt != "":
		v.add("args", "give args.set or args.statement, not both")
	case stmt != "":
		var lo, hi bool
		for _, part := range SplitStatement(stmt) {
			lo = lo || part.Placeholder == "lo"
			hi = hi || part.Placeholder == "hi"
		}
		if !lo || !hi {
			v.add("args.statement", "must use both :lo and :hi to bound each batch; without them every batch would touch the whole table")
		}
	}
	return v.problems
}

func checkBackfillArgs(raw json.RawMessage) []Problem {
	var a BackfillColumnArgs
	v := argsValidator(raw, map[string]fieldDecoder{"updates": valuesField(&a.Updates)})
	if !v.hasProblem("args.updates") {
		v.checkUpdates("args.updates", a.Updates, true)
	}
	return v.problems
}

func checkCopyArgs(raw json.RawMessage) []Problem {
	var a CopyColumnArgs
	v := argsValidator(raw, map[string]fieldDecoder{
		"from": stringListField(&a.From),
		"to":   stringListField(&a.To),
		"cast": stringMapField(&a.Cast),
	})
	if len(v.problems) > 0 {
		return v.problems
	}
	if len(a.From) == 0 {
		v.add("args.from", "required: the columns to copy from")
	}
	if len(a.To) == 0 {
		v.add("args.to", "required: the columns to copy to")
	}
	if len(a.From) > 0 && len(a.To) > 0 && len(a.From) != len(a.To) {
		v.add("args.to", "has %d columns but args.from has %d: they pair up one to one", len(a.To), len(a.From))
	}
	v.identifiers("args.from", a.From)
	v.identifiers("args.to", a.To)
	seen := map[string]bool{}
	for i, c := range a.To {
		if seen[c] {
			v.add(fmt.Sprintf("args.to[%d]", i), "column %q is written twice", c)
		}
		seen[c] = true
	}
	for _, col := range sortedKeys(a.Cast) {
		field := "args.cast." + col
		if !seen[col] {
			v.add(field, "%q is not one of args.to: a cast applies to a destination column", truncate(col, 80))
		}
		if !validTypeName(a.Cast[col]) {
			v.add(field, "%q is not a type name such as bigint, text or numeric(12,2)", truncate(a.Cast[col], 80))
		}
	}
	return v.problems
}

var typeNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*( [A-Za-z][A-Za-z0-9_]*){0,3}(\(\d{1,4}(, ?\d{1,4})?\))?$`)

// validTypeName admits type names like "bigint", "double precision",
// "varchar(255)" or "numeric(12,2)"; the sink then checks its allowlist.
func validTypeName(s string) bool { return typeNamePattern.MatchString(s) }

func checkDeleteAssociatedArgs(raw json.RawMessage) []Problem {
	var a DeleteAssociatedArgs
	hasParent := false
	v := argsValidator(raw, map[string]fieldDecoder{
		"parent_id": func(path string, raw json.RawMessage) []Problem {
			hasParent = true
			return keyField(&a.ParentID)(path, raw)
		},
		"foreign_key": stringField(&a.ForeignKey),
	})
	if !hasParent && !v.hasProblem("args.parent_id") {
		v.add("args.parent_id", "required: the parent key whose rows are deleted")
	}
	v.identifier("args.foreign_key", a.ForeignKey)
	return v.problems
}

func checkDeleteOrphanedArgs(raw json.RawMessage) []Problem {
	var a DeleteOrphanedArgs
	v := argsValidator(raw, map[string]fieldDecoder{
		"associations": objectListField(func(path string, raw json.RawMessage) []Problem {
			var as Association
			p := decodeObject(path, raw, map[string]fieldDecoder{
				"column":     stringField(&as.Column),
				"references": stringField(&as.References),
			})
			a.Associations = append(a.Associations, as)
			return p
		}),
	})
	if len(a.Associations) == 0 && !v.hasProblem("args.associations") {
		v.add("args.associations", "required: at least one {column, references}")
	}
	for i, as := range a.Associations {
		path := fmt.Sprintf("args.associations[%d]", i)
		v.identifier(path+".column", as.Column)
		table, column := as.Referenced()
		switch {
		case as.References == "":
			v.add(path+".references", "required: \"table.column\"")
		case !ValidTableName(table) || !ValidIdentifier(column):
			v.add(path+".references", "%q is not \"table.column\"", truncate(as.References, 80))
		}
	}
	return v.problems
}

func checkPerformActionArgs(raw json.RawMessage) []Problem {
	var a PerformActionArgs
	hasUpdates := false
	v := argsValidator(raw, map[string]fieldDecoder{
		"action": stringField(&a.Action),
		"updates": func(path string, raw json.RawMessage) []Problem {
			hasUpdates = true
			return valuesField(&a.Updates)(path, raw)
		},
	})
	switch a.Action {
	case ActionUpdateAll:
		if !v.hasProblem("args.updates") {
			v.checkUpdates("args.updates", a.Updates, true)
		}
	case ActionDeleteAll:
		if hasUpdates {
			v.add("args.updates", "not used by delete_all")
		}
	case "":
		v.add("args.action", "required: %q or %q", ActionUpdateAll, ActionDeleteAll)
	default:
		v.add("args.action", "must be %q or %q, got %q", ActionUpdateAll, ActionDeleteAll, truncate(a.Action, 40))
	}
	return v.problems
}

func checkResetCountersArgs(raw json.RawMessage) []Problem {
	var a ResetCountersArgs
	v := argsValidator(raw, map[string]fieldDecoder{
		"counters": objectListField(func(path string, raw json.RawMessage) []Problem {
			var c Counter
			p := decodeObject(path, raw, map[string]fieldDecoder{
				"column":      stringField(&c.Column),
				"child_table": stringField(&c.ChildTable),
				"foreign_key": stringField(&c.ForeignKey),
			})
			a.Counters = append(a.Counters, c)
			return p
		}),
		"touch": touchField(&a.Touch),
	})
	if len(a.Counters) == 0 && !v.hasProblem("args.counters") {
		v.add("args.counters", "required: at least one {column, child_table, foreign_key}")
	}
	seen := map[string]bool{}
	for i, c := range a.Counters {
		path := fmt.Sprintf("args.counters[%d]", i)
		v.identifier(path+".column", c.Column)
		if c.ChildTable == "" {
			v.add(path+".child_table", "required")
		} else if !ValidTableName(c.ChildTable) {
			v.add(path+".child_table", "%q is not a plain table name", truncate(c.ChildTable, 80))
		}
		v.identifier(path+".foreign_key", c.ForeignKey)
		if seen[c.Column] && c.Column != "" {
			v.add(path+".column", "counter %q is listed twice", c.Column)
		}
		seen[c.Column] = true
	}
	if a.Touch != "" && !ValidIdentifier(a.Touch) {
		v.add("args.touch", "%q is not a plain column name", truncate(a.Touch, 80))
	}
	return v.problems
}

// argsValidator decodes the args object with the given fields and returns a
// validator holding the decoding problems.
func argsValidator(raw json.RawMessage, fields map[string]fieldDecoder) *validator {
	v := &validator{}
	if len(bytes.TrimSpace(raw)) == 0 || isNull(raw) {
		raw = json.RawMessage("{}")
	}
	v.problems = decodeObject("args", raw, fields)
	return v
}

func (v *validator) identifier(field, name string) {
	switch {
	case name == "":
		v.add(field, "required")
	case !ValidIdentifier(name):
		v.add(field, "%q is not a plain column name: use letters, digits and '_'", truncate(name, 80))
	}
}

func (v *validator) identifiers(field string, names []string) {
	for i, n := range names {
		v.identifier(fmt.Sprintf("%s[%d]", field, i), n)
	}
}

func (v *validator) checkUpdates(field string, updates map[string]any, required bool) {
	if len(updates) == 0 {
		if required {
			v.add(field, "required: at least one {\"column\": value}")
		}
		return
	}
	for _, col := range sortedKeys(updates) {
		if !ValidIdentifier(col) {
			v.add(field, "%q is not a plain column name: use letters, digits and '_'", truncate(col, 80))
		}
	}
}

// valuesField decodes {column: value}; numbers stay exact (json.Number).
func valuesField(dst *map[string]any) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if _, err := objectMembers(raw); err != nil {
			return []Problem{{Field: path, Message: err.Error()}}
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(dst); err != nil {
			return []Problem{{Field: path, Message: "must be an object of column values"}}
		}
		return nil
	}
}

func stringMapField(dst *map[string]string) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if err := json.Unmarshal(raw, dst); err != nil {
			return []Problem{{Field: path, Message: "must be an object of strings, got " + jsonKind(raw)}}
		}
		return nil
	}
}

// objectListField decodes a list of objects, each with decodeItem.
func objectListField(decodeItem fieldDecoder) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return []Problem{{Field: path, Message: "must be a list of objects, got " + jsonKind(raw)}}
		}
		var problems []Problem
		for i, item := range items {
			problems = append(problems, decodeItem(fmt.Sprintf("%s[%d]", path, i), item)...)
		}
		return problems
	}
}

// touchField reads true (meaning "updated_at"), false, or a column name.
func touchField(dst *string) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		var b bool
		if err := json.Unmarshal(raw, &b); err == nil {
			*dst = ""
			if b {
				*dst = "updated_at"
			}
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return []Problem{{Field: path, Message: "must be true or a column name, got " + jsonKind(raw)}}
		}
		return nil
	}
}

// UnmarshalJSON accepts touch as true ("updated_at"), false or a column name.
func (a *ResetCountersArgs) UnmarshalJSON(data []byte) error {
	type plain ResetCountersArgs
	var aux struct {
		plain
		Touch json.RawMessage `json:"touch,omitempty"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	*a = ResetCountersArgs(aux.plain)
	if len(aux.Touch) > 0 {
		if p := touchField(&a.Touch)("touch", aux.Touch); p != nil {
			return fmt.Errorf("%s", p[0])
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
