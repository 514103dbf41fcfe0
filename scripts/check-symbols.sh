#!/usr/bin/env bash
# Envoy 1.40.0 loads modules with RTLD_NOW: every Envoy callback the module references must be
# exported by the binary (abi/envoy-1.40-callbacks.txt, read from the 1.40.0 binary), or the
# module fails to load. Also checks the ABI version string and the hooks Envoy requires.
set -euo pipefail
cd "$(dirname "$0")/.."
SO=${1:-target/release/libreverse_tunnel.so}
missing=0
for sym in $(nm -D --undefined-only "$SO" | awk '{print $2}' | grep '^envoy_dynamic_module_callback_' | sort -u); do
  if ! grep -qx "$sym" abi/envoy-1.40-callbacks.txt; then echo "NOT EXPORTED BY ENVOY 1.40.0: $sym"; missing=1; fi
done
n=$(nm -D --undefined-only "$SO" | grep -c 'envoy_dynamic_module_callback_' || true)
for hook in program_init \
  bootstrap_extension_{config_new,config_destroy,new,worker_thread_initialized,server_initialized,drain_started,shutdown,destroy,config_scheduled,timer_fired,file_changed,http_callout_done,admin_request,cluster_add_or_update,cluster_removal,listener_add_or_update,listener_removal} \
  network_filter_{config_new,config_destroy,new,new_connection,read,write,event,destroy,scheduled} \
  listener_filter_{config_new,config_destroy,new,on_accept,on_data,on_close,get_max_read_bytes,destroy,scheduled}; do
  if ! nm -D --defined-only "$SO" | awk "{print \$3}" | grep -x "envoy_dynamic_module_on_$hook" >/dev/null; then
    echo "MISSING HOOK: envoy_dynamic_module_on_$hook"; missing=1
  fi
done
strings "$SO" | grep -x 'v0.2.0' >/dev/null || { echo "ABI version string v0.2.0 not found"; missing=1; }
[ $missing -eq 0 ] && echo "check-symbols: $n Envoy callbacks referenced, all exported by 1.40.0; all required hooks present"
exit $missing
