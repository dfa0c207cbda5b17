"""kpiwatch's alerting side: messages, charts and delivery. Imports only `forecaster.types`."""
