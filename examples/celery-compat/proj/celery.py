"""The app, as in Celery's "next steps" tutorial: ``include=`` names the task modules."""

from celeriac import Celery

app = Celery("proj", include=["proj.tasks"])
app.config_from_object("celeryconfig")
app.config_from_object("proj.settings", namespace="CELERY")

if __name__ == "__main__":
    app.start()
