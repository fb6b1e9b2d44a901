"""Azure Functions entry point (Python v2 model): builds the app and registers the blueprints."""

import os

import azure.functions as func

from functions import archiver, drill, dropper, http_api, planner

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (planner.bp, archiver.bp, dropper.bp, http_api.bp):
    app.register_functions(blueprint)
if os.environ.get("ARCHIVER_DRILL_SCHEDULE", "").strip():  # the recovery drill is off unless scheduled
    app.register_functions(drill.bp)
