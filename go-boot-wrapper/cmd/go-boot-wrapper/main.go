// Command go-boot-wrapper is the long-lived entrypoint of a Beam Go SDK harness container managed by the recycler: it
// holds one harness slot, and for every lease the recycler gives it runs Beam's boot contract and a fresh inner Go
// worker, which it stops again on the recycler's Exit instruction. Its own PID never changes across leases.
//
// Steps: (1) flags, each overridable by an environment variable; (2) signals; (3) become the reaper of orphaned
// descendants; (4) hold the slot until SIGTERM/SIGINT, then stop the worker and exit 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"recycler.dev/go-boot-wrapper/internal/attach"
	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/supervisor"
	"recycler.dev/go-boot-wrapper/internal/wrapper"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

var (
	slot        = flag.String("slot", "", "Slot id this wrapper holds; must be one of the recycler's slot ids. Env RECYCLER_SLOT (required)")
	recycler    = flag.String("recycler", "", "The recycler's fixed gRPC endpoint, HOST:PORT. Env RECYCLER_ENDPOINT (required)")
	workDir     = flag.String("work_dir", "/tmp/go-boot-wrapper", "Directory for per-lease directories and the local artifact cache. Env RECYCLER_WORK_DIR (optional)")
	gracePeriod = flag.Duration("grace_period", 10*time.Second, "Time a worker gets between SIGTERM and SIGKILL when stopped. Env RECYCLER_GRACE_PERIOD (optional)")
	logFormat   = flag.String("log_format", "text", "Log format on stderr: text or json. Env RECYCLER_LOG_FORMAT (optional)")
	logLevel    = flag.String("log_level", "info", "Log level: debug, info, warn or error. Env RECYCLER_LOG_LEVEL (optional)")
	cacheMaxMB  = flag.Int64("cache_max_mb", 2048, "Bound of the local artifact cache in MiB, least recently used evicted after a lease; 0 = unbounded. Env RECYCLER_CACHE_MAX_MB (optional)")
	passEnv     = flag.String("pass_env", "", "Comma-separated names of wrapper environment variables copied into every worker's environment. Env RECYCLER_PASS_ENV (optional)")
	workerUID   = flag.Int("worker_uid", -1, "Run workers as this user id (the wrapper must run as root); -1 = the wrapper's user. Env RECYCLER_WORKER_UID (optional)")
	workerGID   = flag.Int("worker_gid", -1, "Group id for --worker_uid (required with it). Env RECYCLER_WORKER_GID (optional)")
	secretFile  = flag.String("attach_secret_file", "", "File holding the secret the recycler requires on attach (its attach-secret-file), e.g. a mounted Kubernetes Secret. Env RECYCLER_ATTACH_SECRET_FILE (optional)")
	showVersion = flag.Bool("version", false, "Print the version and exit (optional)")
)

// envVars maps each flag to the environment variable that sets it; an explicit flag wins over the variable.
var envVars = map[string]string{
	"slot":               "RECYCLER_SLOT",
	"recycler":           "RECYCLER_ENDPOINT",
	"work_dir":           "RECYCLER_WORK_DIR",
	"grace_period":       "RECYCLER_GRACE_PERIOD",
	"log_format":         "RECYCLER_LOG_FORMAT",
	"log_level":          "RECYCLER_LOG_LEVEL",
	"pass_env":           "RECYCLER_PASS_ENV",
	"cache_max_mb":       "RECYCLER_CACHE_MAX_MB",
	"worker_uid":         "RECYCLER_WORKER_UID",
	"worker_gid":         "RECYCLER_WORKER_GID",
	"attach_secret_file": "RECYCLER_ATTACH_SECRET_FILE",
}

// Exit codes.
const (
	exitOK      = 0 // stopped by SIGTERM/SIGINT after stopping the worker
	exitFailure = 1 // could not start (e.g. work dir not writable)
	exitUsage   = 2 // bad or missing flags
)

// Config is the wrapper's validated configuration.
type Config struct {
	Slot, Recycler, WorkDir string
	GracePeriod             time.Duration
	LogFormat               string
	LogLevel                slog.Level
	PassEnv                 []string
	CacheMaxBytes           int64
	Worker                  *boot.User // nil: workers run as the wrapper's user
	// AttachSecret is the content of --attach_secret_file ("": none). A secret: never log it.
	AttachSecret string
}

func main() {
	// (1) Flags: environment variables first, so that explicit flags override them.
	for name, env := range envVars {
		if v, ok := os.LookupEnv(env); ok {
			if err := flag.Set(name, v); err != nil {
				fmt.Fprintf(os.Stderr, "go-boot-wrapper: invalid %s=%q: %v\n", env, v, err)
				os.Exit(exitUsage)
			}
		}
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("go-boot-wrapper", version)
		os.Exit(exitOK)
	}
	cfg, err := configFromFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-boot-wrapper: %v\n", err)
		flag.Usage()
		os.Exit(exitUsage)
	}

	// (2) Signals: the first SIGTERM/SIGINT starts the orderly stop; later ones are absorbed until it is done.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err = Run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-boot-wrapper: %v\n", err)
		os.Exit(exitFailure)
	}
	os.Exit(exitOK)
}

func configFromFlags() (Config, error) {
	cfg := Config{
		Slot: strings.TrimSpace(*slot), Recycler: strings.TrimSpace(*recycler), WorkDir: *workDir,
		GracePeriod: *gracePeriod, LogFormat: *logFormat, CacheMaxBytes: *cacheMaxMB << 20,
	}
	var missing []string
	if cfg.Slot == "" {
		missing = append(missing, "--slot (or RECYCLER_SLOT)")
	}
	if cfg.Recycler == "" {
		missing = append(missing, "--recycler (or RECYCLER_ENDPOINT)")
	}
	if len(missing) > 0 {
		return cfg, fmt.Errorf("missing %s", strings.Join(missing, " and "))
	}
	if cfg.WorkDir == "" {
		return cfg, errors.New("--work_dir must not be empty")
	}
	if cfg.GracePeriod < 0 {
		return cfg, errors.New("--grace_period must not be negative")
	}
	if *cacheMaxMB < 0 {
		return cfg, errors.New("--cache_max_mb must not be negative")
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("--log_format must be text or json, not %q", cfg.LogFormat)
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("--log_level must be debug, info, warn or error, not %q", *logLevel)
	}
	switch {
	case *workerUID == -1 && *workerGID == -1:
	case *workerUID < 0 || *workerGID < 0:
		return cfg, errors.New("--worker_uid and --worker_gid must be set together, each a non-negative id")
	default:
		cfg.Worker = &boot.User{UID: uint32(*workerUID), GID: uint32(*workerGID)}
	}
	if *secretFile != "" {
		secret, err := attach.ReadSecretFile(*secretFile)
		if err != nil {
			return cfg, fmt.Errorf("--attach_secret_file: %w", err)
		}
		cfg.AttachSecret = secret
	}
	for _, name := range strings.Split(*passEnv, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cfg.PassEnv = append(cfg.PassEnv, name)
		}
	}
	return cfg, nil
}

// Run holds the slot until ctx ends, then stops the worker and returns nil. It returns an error only when the wrapper
// cannot start at all.
func Run(ctx context.Context, cfg Config) error {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	log := slog.New(h)
	slog.SetDefault(log)

	// (3) Orphaned descendants of workers re-parent to us (PID 1 or subreaper) so they can be killed and reaped.
	sup := supervisor.New(supervisor.LinuxSystem{}, log)
	if err := sup.BecomeReaper(); err != nil {
		log.Warn("cannot become child subreaper; grandchildren that leave the worker's process group may survive a lease", "error", err)
	}
	reapCtx, stopReaping := context.WithCancel(context.Background())
	defer stopReaping()
	go sup.ReapZombies(reapCtx, time.Second)

	// (4) Hold the slot.
	w, err := wrapper.New(wrapper.Config{
		SlotID:           cfg.Slot,
		RecyclerEndpoint: cfg.Recycler,
		WorkDir:          cfg.WorkDir,
		GracePeriod:      cfg.GracePeriod,
		PassEnv:          cfg.PassEnv,
		CacheMaxBytes:    cfg.CacheMaxBytes,
		Worker:           cfg.Worker,
		AttachSecret:     cfg.AttachSecret,
		Version:          version,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
	}, sup, log)
	if err != nil {
		return err
	}
	defer w.Close()
	log.Info("starting", "slot", cfg.Slot, "recycler", cfg.Recycler, "work_dir", cfg.WorkDir,
		"grace_period", cfg.GracePeriod, "pid", os.Getpid(), "version", version, "attach_secret", cfg.AttachSecret != "")
	return w.Run(ctx)
}
