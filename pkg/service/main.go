package service

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main is the whole main function of a service binary: it reads flags and
// environment (NATS_URL, JIT_CONFIG, LOG_LEVEL), connects, prepares, builds
// the service with build, runs it until SIGINT or SIGTERM, and exits 0, or 2
// on a start-up error.
func Main(name string, build func(Deps) Service) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	natsURL := fs.String("nats-url", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env NATS_URL)")
	cfgFile := fs.String("config", os.Getenv("JIT_CONFIG"), "optional configuration file to apply at start (env JIT_CONFIG)")
	level := fs.String("log-level", envOr("LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	_ = fs.Parse(os.Args[1:])

	log := Logger(name, *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, name, *natsURL, *cfgFile, build, log); err != nil {
		log.Error().Err(err).Msg("exiting")
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
}

func run(ctx context.Context, name, url, cfgFile string, build func(Deps) Service, log Log) error {
	nc, err := Connect(url, name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	deps, err := Prepare(ctx, nc, cfgFile, name, log)
	if err != nil {
		return err
	}
	svc := build(deps)
	if err := svc.Start(ctx); err != nil {
		return err
	}
	log.Info().Str("nats", url).Msg("running")
	<-ctx.Done()
	log.Info().Msg("stopping")
	svc.Stop()
	return nc.Drain()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
