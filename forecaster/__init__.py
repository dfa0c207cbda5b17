"""kpiwatch's forecasting side: sources, KPIs, models, detection, explanation, pipeline."""
