#!/bin/sh
# Entrypoint of the tuner image: run the given command (default `tuner serve ...`).
#
# When the command is `tuner ...` and RAY_ADDRESS is a GCS address (host:port), this container
# first joins the Ray cluster as a node with no CPUs and no GPUs. A Ray 2.60 driver given a GCS
# address attaches to a raylet running on its own host (ray/_private/services.py,
# get_node_to_connect_for_driver); a container without one cannot be a driver. With
# --num-cpus=0 --num-gpus=0 no trial is ever placed on this node.
# The Ray containers (head, workers) run `ray start ...` directly and skip this.
set -eu

if [ "${1:-}" = "tuner" ]; then
  case "${RAY_ADDRESS:-}" in
    "" | auto | local | ray://*) ;;
    *)
      ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats
      ;;
  esac
fi

exec "$@"
