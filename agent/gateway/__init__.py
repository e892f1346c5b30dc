"""The host's OpenAI gateway (`vllm-agent gateway`): one endpoint in front of the ready deployments.

routing   which engine answers (pure)        migration  continuing a stream elsewhere (pure)
server    the HTTP/1.1 server (httptools)    upstream   keep-alive connections to the engines
proxy     the request path                   relay      a started stream, migrated if need be
live      the daemon's pushed view           view       what the daemon sends (its side)
keys      API keys and their limits          metrics    Prometheus text and the access log
main      the service: notify, watchdog, signals
"""
