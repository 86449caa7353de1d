"""SQLAlchemy ORM over PyMySQL through the WolfScale proxy.

Usage: python3 orm_test.py PORT USER PASSWORD DATABASE
Exits non-zero (with a traceback) on any failure.
"""
import sys
from datetime import datetime
from decimal import Decimal

import pymysql
from sqlalchemy import (ForeignKey, Numeric, String, Text, create_engine, func,
                        select)
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, mapped_column,
                            relationship)


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    blurb: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    published: Mapped[datetime] = mapped_column(default=datetime(2020, 1, 1))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def main() -> None:
    port, user, password, database = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    url = f"mysql+pymysql://{user}:{password}@127.0.0.1:{port}/{database}?charset=utf8mb4"
    engine = create_engine(url, pool_size=3, pool_pre_ping=True)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    with Session(engine) as s:
        ann = Author(name="Ann Leckie")
        ann.books = [
            Book(title="Ancillary Justice", price=Decimal("9.99"), blurb="Breq 🚀"),
            Book(title="Ancillary Sword", price=Decimal("10.50")),
        ]
        s.add(ann)
        s.add(Author(name="Iain Banks", books=[Book(title="Excession", price=Decimal("8.00"))]))
        s.commit()
        assert ann.id is not None

    with Session(engine) as s:
        rows = s.execute(
            select(Author.name, func.count(Book.id), func.sum(Book.price))
            .join(Book).group_by(Author.name).order_by(Author.name)
        ).all()
        assert rows == [("Ann Leckie", 2, Decimal("20.49")), ("Iain Banks", 1, Decimal("8.00"))], rows
        book = s.scalars(select(Book).where(Book.title.like("%Justice"))).one()
        assert book.blurb == "Breq 🚀", book.blurb
        assert book.author.name == "Ann Leckie"
        book.price = Decimal("12.00")
        s.commit()

    # A rolled-back transaction leaves nothing behind.
    with Session(engine) as s:
        s.add(Author(name="Nobody"))
        s.flush()
        s.rollback()
    with Session(engine) as s:
        assert s.scalars(select(Author).where(Author.name == "Nobody")).first() is None
        assert s.scalars(select(Book.price).where(Book.title == "Ancillary Justice")).one() == Decimal("12.00")
        # Unique violation surfaces as IntegrityError with MariaDB's code.
        s.add(Author(name="Iain Banks"))
        try:
            s.commit()
            raise AssertionError("duplicate accepted")
        except Exception as e:  # sqlalchemy.exc.IntegrityError
            assert getattr(e, "orig", None) is not None and e.orig.args[0] == 1062, e
            s.rollback()
        s.delete(s.scalars(select(Author).where(Author.name == "Iain Banks")).one())
        s.commit()
        assert s.scalar(select(func.count()).select_from(Book)) == 2

    # Plain PyMySQL: server-side prepared-style parameters, executemany, autocommit toggles.
    conn = pymysql.connect(host="127.0.0.1", port=int(port), user=user, password=password, database=database)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO authors (name) VALUES (%s)", [(f"bulk{i}",) for i in range(50)])
        conn.commit()
        cur.execute("SELECT COUNT(*) FROM authors WHERE name LIKE %s", ("bulk%",))
        assert cur.fetchone()[0] == 50
        conn.ping()
        conn.select_db("mysql")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone()[0] == "mysql"
    conn.close()
    print("orm ok")


if __name__ == "__main__":
    main()
