package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/projectord/projectord/internal/store"
)

// LoadOptions says where Load reads configuration from. The zero value
// reads the process environment and the first existing default file.
type LoadOptions struct {
	// File is an explicit config file (the --config flag). A file named here
	// or in PROJECTORD_CONFIG must exist.
	File string
	// Content, when not nil, is the config file itself (an embedded file):
	// File, PROJECTORD_CONFIG and LookPaths are then not consulted.
	Content []byte
	// Flags are bound by name: a flag called "database.url" sets the key
	// database.url (DefineFlag defines such a flag). Flags whose name is not
	// a config key, and flags the user did not set, are ignored.
	Flags *pflag.FlagSet
	// FlagKeys maps a flag name to the config key it sets, for flags whose
	// name is not the key ("log-level" -> "log.level"). Naming a flag that
	// Flags lacks, or a key that does not exist, is an error.
	FlagKeys map[string]string
	// Overrides set keys above every other source, flags included: values
	// a command decided itself, decoded and validated like any other (a
	// string or a value of the key's type). Naming a key that does not
	// exist is an error.
	Overrides map[string]any
	// Env looks up environment variables; nil means os.LookupEnv, NoEnv
	// none at all. Tests inject a map so they can run in parallel.
	Env func(string) (string, bool)
	// LookPaths are tried in order when no file is named; nil means
	// DefaultLookPaths(), an empty non-nil slice disables the search.
	LookPaths []string
}

// NoEnv is an environment without variables, for LoadOptions.Env.
func NoEnv(string) (string, bool) { return "", false }

func (o LoadOptions) env() func(string) (string, bool) {
	if o.Env == nil {
		return os.LookupEnv
	}
	return o.Env
}

// Load reads, defaults and validates the configuration.
//
// The file is LoadOptions.Content, else LoadOptions.File, else the file
// named by PROJECTORD_CONFIG, else the first of LookPaths that exists; a
// named file that is missing is an error, while finding none of the look
// paths is not (everything then comes from the environment, flags and
// defaults).
//
// Every scalar key is resolved with the precedence override > flag >
// environment > file > default. The environment variable of a key is
// PROJECTORD_ followed by the key upper-cased with "." replaced by "_"
// (database.url -> PROJECTORD_DATABASE_URL); an empty variable counts as
// unset. Projectors come from the file only.
//
// Load fills every projector's unset batch_size and on_error fields from
// defaults, reads database.url_file into database.url, and then validates. On
// any problem it returns a nil Config and a *ValidationError listing every
// problem found, decode errors (unknown keys, wrong types) and validation
// errors alike, each with its field path: the first 100 of them, and how
// many more there were. Errors about the file itself (missing, unreadable,
// not YAML, larger than MaxConfigSize, nested deeper than MaxConfigDepth,
// or aliases expanding it past 262,144 values) are returned as plain
// errors. Loading takes time linear in the size of the file.
func Load(opts LoadOptions) (*Config, error) {
	data, name := opts.Content, "config"
	if data == nil {
		path, err := FindFile(opts)
		if err != nil {
			return nil, err
		}
		if path != "" {
			// Reading stops past the size limit: a wrong path (a log file,
			// /dev/zero) must not exhaust memory. It may be a pipe, as in
			// --config <(...), so it is not required to be a regular file.
			data, err = readSmallFile(path, MaxConfigSize)
			if err != nil {
				return nil, fmt.Errorf("error reading config file: %w", err)
			}
			name = path
		}
	}
	return load(data, name, opts)
}

// LoadBytes is Load for a file's content: no file search and no flags. env
// may be nil, meaning no environment at all.
func LoadBytes(data []byte, env func(string) (string, bool)) (*Config, error) {
	if env == nil {
		env = NoEnv
	}
	return load(data, "config", LoadOptions{Env: env})
}

// FindFile returns the config file Load would read, or "" when there is none.
// See Load for the search order.
func FindFile(opts LoadOptions) (string, error) {
	explicit := opts.File
	if explicit == "" {
		if v, ok := opts.env()(EnvConfigFile); ok {
			explicit = v
		}
	}
	if explicit != "" {
		fi, err := os.Stat(explicit)
		if err != nil {
			return "", fmt.Errorf("error finding config file: %w", err)
		}
		if fi.IsDir() {
			return "", fmt.Errorf("config file %s is a directory", explicit)
		}
		return explicit, nil
	}
	paths := opts.LookPaths
	if paths == nil {
		paths = DefaultLookPaths()
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("error finding config file: %w", err)
		}
		if fi.IsDir() {
			return "", fmt.Errorf("config file %s is a directory", p)
		}
		return p, nil
	}
	return "", nil
}

// projectorsKey is the one section decoded without viper: viper lower-cases
// every map key, and the handler keys inside it are case-sensitive event
// type names.
const projectorsKey = "projectors"

func load(data []byte, name string, opts LoadOptions) (*Config, error) {
	cfg, problems, err := decode(data, name, opts)
	if err != nil {
		return nil, err
	}
	cfg.applyProjectorDefaults()
	urlFileOK := true
	if p, ok := cfg.resolveURLFile(); !ok {
		problems = append(problems, p)
		urlFileOK = false
	}
	// A field that failed to decode holds a zero value; validating it again
	// would only repeat the problem in other words. Likewise, a url_file that
	// could not be read leaves database.url empty.
	ix := indexProblems(problems)
	for _, p := range cfg.problems() {
		if !ix.covered(p.Path) && (urlFileOK || p.Path != "database.url") {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	return cfg, nil
}

// decode resolves every key through viper's layers, each over the one
// before: the defaults of Default, the file (which the environment
// overlays, see overlayEnv), flags, overrides. It returns the Config even
// when some fields failed to decode, with one problem per failure, sorted
// by path; err is for failures that leave nothing to report on.
//
// viper does not read the file itself: its YAML decoding is unbounded, and
// it would lower-case the case-sensitive handler keys. The bounded parser
// reads it, and conform checks it against the keys.
func decode(data []byte, name string, opts LoadOptions) (*Config, []Problem, error) {
	doc, err := parseYAML(data)
	if err != nil {
		return nil, nil, fmt.Errorf("error parsing %s: %w", name, err)
	}
	conformed, problems := conform(doc, reflect.TypeFor[Config](), "", &suggester{left: maxSuggestions}, false)
	file := conformed.(map[string]any)
	projectors, hasProjectors := file[projectorsKey]
	delete(file, projectorsKey)
	overlayEnv(file, opts.env())

	v := viper.New()
	def := Default()
	for _, l := range leaves() {
		if !isPresetKey(l.key) {
			v.SetDefault(l.key, leafValue(&def, l))
		}
	}
	if err := v.MergeConfigMap(file); err != nil {
		return nil, nil, fmt.Errorf("error merging %s: %w", name, err)
	}
	if err := bindFlags(v, opts); err != nil {
		return nil, nil, err
	}
	// Column and table defaults depend on the preset, which any source
	// may set.
	preset := store.Presets[v.GetString("source.preset")]
	columns := Config{Source: Source{Table: preset.Table, Columns: preset.Columns}}
	for _, l := range leaves() {
		if isPresetKey(l.key) {
			v.SetDefault(l.key, leafValue(&columns, l))
		}
	}

	settings := v.AllSettings()
	if hasProjectors {
		settings[projectorsKey] = projectors
	}
	var cfg Config
	if err := decodeStrict(settings, &cfg); err != nil {
		problems = append(problems, decodeProblems(err)...)
	}
	sortProblems(problems)
	return &cfg, problems, nil
}

// isPresetKey reports whether the key's default comes from the preset.
func isPresetKey(key string) bool {
	return strings.HasPrefix(key, "source.columns.") || key == "source.table"
}

// covered reports whether a problem at path, at a parent of it or inside it
// is already listed. A value that failed to decode is left at its zero
// value, so its own check, or its parent's "is required", would only repeat
// the listed problem in other words.
func (ix problemIndex) covered(path string) bool {
	if ix.inside[path] {
		return true
	}
	for p := range ancestors(path) {
		if ix.at[p] {
			return true
		}
	}
	return false
}

// problemIndex finds listed problems by path in time linear in the path,
// not in the number of problems (15,000 problems took 20 s to cross-check).
type problemIndex struct {
	at     map[string]bool // paths with a problem
	inside map[string]bool // those paths and every parent of them
}

func indexProblems(problems []Problem) problemIndex {
	ix := problemIndex{at: map[string]bool{}, inside: map[string]bool{}}
	for _, p := range problems {
		if p.Path == "" {
			continue
		}
		ix.at[p.Path] = true
		for a := range ancestors(p.Path) {
			ix.inside[a] = true
		}
	}
	return ix
}

// ancestors yields path and every parent of it: "a.b[0].c", "a.b[0]",
// "a.b", "a". A quoted key may contain "." or "[", which then yields a
// few extra prefixes that no problem has as its path.
func ancestors(path string) func(func(string) bool) {
	return func(yield func(string) bool) {
		if !yield(path) {
			return
		}
		for i := len(path) - 1; i > 0; i-- {
			if (path[i] == '.' || path[i] == '[') && !yield(path[:i]) {
				return
			}
		}
	}
}

// resolveURLFile reads database.url_file into database.url, and warns
// when the file is readable by more than its owner.
func (c *Config) resolveURLFile() (Problem, bool) {
	const path = "database.url_file"
	if c.Database.URLFile == "" {
		return Problem{}, true
	}
	if c.Database.URL != "" {
		return Problem{Path: path, Message: "cannot be set together with database.url: set one of them"}, false
	}
	b, fi, err := readRegularFile(c.Database.URLFile, maxURLFileSize)
	if err != nil {
		return Problem{Path: path, Message: fmt.Sprintf("cannot be read: %v", err)}, false
	}
	url := strings.TrimSpace(string(b))
	if url == "" {
		return Problem{Path: path, Message: fmt.Sprintf("file %s is empty", c.Database.URLFile)}, false
	}
	c.Database.URL = url
	// Group read is how a file owned by another user is shared with this
	// one (a Kubernetes secret volume with fsGroup and defaultMode 0440):
	// doubtful only when this process owns the file and needs none of it.
	perm := fi.Mode().Perm()
	if !ownedByMe(fi) {
		perm &^= 0o040
	}
	if perm&0o044 != 0 {
		who := "its group and others"
		switch {
		case perm&0o040 == 0:
			who = "others"
		case perm&0o004 == 0:
			who = "its group"
		}
		c.warnings = append(c.warnings, fmt.Sprintf("%s: %s holds the database password and is readable by %s (mode %04o); make it readable by its owner only (chmod 600, or defaultMode 0400 for a Kubernetes secret volume)",
			path, c.Database.URLFile, who, fi.Mode().Perm()))
	}
	return Problem{}, true
}

// maxURLFileSize bounds database.url_file: a URL is short, and a path
// pointing at the wrong file (a log, /dev/zero) must not exhaust memory.
const maxURLFileSize = 64 << 10

// readSmallFile reads a file of at most limit bytes.
func readSmallFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, name, limit)
}

// readRegularFile reads a regular file of at most limit bytes and returns
// its FileInfo. A named pipe, device or socket at the path is
// refused without blocking: the path is checked before it is opened, and
// it is opened non-blocking (opening a FIFO for reading otherwise waits for
// a writer, forever) and checked again, in case it changed in between.
func readRegularFile(name string, limit int64) ([]byte, fs.FileInfo, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, notRegular(name, fi.Mode())
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !ofi.Mode().IsRegular() {
		return nil, nil, notRegular(name, ofi.Mode())
	}
	if !os.SameFile(fi, ofi) {
		return nil, nil, fmt.Errorf("%s was replaced while being opened", name)
	}
	b, err := readLimited(f, name, limit)
	return b, ofi, err
}

func notRegular(name string, m fs.FileMode) error {
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	}
	return fmt.Errorf("%s is %s; it must be a regular file", name, kind)
}

func readLimited(r io.Reader, name string, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes; is it the right file?", name, limit)
	}
	return b, nil
}

// overlayEnv writes the environment variable of every scalar key that is
// set and not empty into the file's conformed settings, above the file's
// own value. viper's environment layer cannot be used: it always reads
// os.LookupEnv, and the environment must be injectable (LoadOptions.Env).
func overlayEnv(file map[string]any, env func(string) (string, bool)) {
	for _, l := range leaves() {
		val, ok := env(l.env)
		if !ok || val == "" {
			continue
		}
		m := file
		segs := strings.Split(l.key, ".")
		for _, seg := range segs[:len(segs)-1] {
			child, isMap := m[seg].(map[string]any)
			if !isMap {
				child = map[string]any{}
				m[seg] = child
			}
			m = child
		}
		m[segs[len(segs)-1]] = val
	}
}

// bindFlags binds opts' flags and sets its overrides: viper's two layers
// above the environment.
func bindFlags(v *viper.Viper, opts LoadOptions) error {
	for key, val := range opts.Overrides {
		if !isLeafKey(key) {
			return fmt.Errorf("config: override of %q, which is not a config key", key)
		}
		v.Set(key, val)
	}
	flags, flagKeys := opts.Flags, opts.FlagKeys
	if flags == nil {
		if len(flagKeys) > 0 {
			return errors.New("config: FlagKeys given without Flags")
		}
		return nil
	}
	for name, key := range flagKeys {
		if flags.Lookup(name) == nil {
			return fmt.Errorf("config: FlagKeys names flag --%s, which is not defined", name)
		}
		if !isLeafKey(key) {
			return fmt.Errorf("config: flag --%s is mapped to %q, which is not a config key", name, key)
		}
	}
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		key, ok := flagKeys[f.Name]
		if !ok {
			if !isLeafKey(f.Name) {
				return
			}
			key = f.Name
		}
		if e := v.BindPFlag(key, f); e != nil && err == nil {
			err = fmt.Errorf("error binding flag --%s: %w", f.Name, e)
		}
	})
	return err
}
