module nixfleet/agent

go 1.21
