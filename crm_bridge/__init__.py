"""The CRM bridge: work orders (工单), customer lookup, outage notices, surveys."""
