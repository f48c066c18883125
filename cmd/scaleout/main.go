// Command scaleout runs the scaleout gateway and its tools.
//
//	scaleout serve --config scaleout.yaml    run the gateway
//	scaleout validate --config scaleout.yaml check a configuration file
//	scaleout backend --listen 127.0.0.1:9001 run the small built-in app
//	scaleout demo                            run a gateway in front of three backends
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `scaleout: one web application, many instances.

Usage:
  scaleout serve    --config FILE   run the gateway (SIGHUP or a file change reloads; SIGTERM stops)
  scaleout validate --config FILE   check a configuration file and exit
  scaleout backend  --listen ADDR   run the small built-in app (/health, a JSON page)
  scaleout demo                     start three backends and a gateway in front of them
  scaleout shard rebalance -meta DSN -keyspace NAME [-add name=dsn,…] [-dry-run] [-abort]
                                    move buckets between shards online (resumes after a crash)

Run "scaleout COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "backend":
		return cmdBackend(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "shard":
		return cmdShard(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "scaleout: unknown command %q\n\n%s", args[0], usage)
	return 2
}
