"""request_journal: one row per admitted request while it runs (written with the settlements,
batched), removed when it is settled; worker_beat: when each worker was last alive. A live
worker settles the journal rows of a dead one at their reservation (services/journal.py)."""
from peewee import BigIntegerField, CharField, DateTimeField, IntegerField, Model


def up(migrator, db):
    class RequestJournal(Model):
        request_id = CharField(max_length=64, primary_key=True)
        key_id = IntegerField(null=True)
        model = CharField(max_length=200)
        stream = IntegerField(default=0)
        worker = CharField(max_length=80)
        reservation_nanos = BigIntegerField(default=0)
        started_at = DateTimeField()

        class Meta:
            database = db
            table_name = "request_journal"
            indexes = ((("worker",), False),)

    class WorkerBeat(Model):
        worker = CharField(max_length=80, primary_key=True)
        seen_at = DateTimeField()

        class Meta:
            database = db
            table_name = "worker_beat"

    db.create_tables([RequestJournal, WorkerBeat])


def down(migrator, db):
    db.execute_sql("DROP TABLE worker_beat")
    db.execute_sql("DROP TABLE request_journal")
