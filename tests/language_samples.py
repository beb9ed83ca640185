"""A labelled set for language identification: support-style texts of 20 to 200 characters in twelve
languages, as users type them (questions, complaints, lower case, a product name or an order number in
the middle), and the inputs that must come out ``und``: too short, mixed scripts, code, JSON, URLs,
numbers and emoji only. Written for nlpmon's tests and bench/language_id.py, not taken from a corpus
any detector was trained on."""
from __future__ import annotations

LABELLED: list[tuple[str, str]] = [
    # English
    ("en", "Where is my parcel? It was supposed to arrive yesterday."),
    ("en", "how do i reset my password"),
    ("en", "I was charged twice for order 48213, please refund the second payment."),
    ("en", "The app keeps crashing when I open the settings page on my phone."),
    ("en", "Can I change the delivery address after the order has shipped? I moved last week and "
           "forgot to update it before checking out."),
    ("en", "cancel my subscription please"),
    # German
    ("de", "Wo ist mein Paket? Es sollte gestern ankommen."),
    ("de", "wie kann ich mein passwort zurücksetzen"),
    ("de", "Mir wurde die Bestellung 48213 zweimal berechnet, bitte erstatten Sie die zweite Zahlung."),
    ("de", "Die App stürzt jedes Mal ab, wenn ich die Einstellungen öffne."),
    ("de", "Kann ich die Lieferadresse noch ändern, nachdem die Bestellung verschickt wurde? Ich bin "
           "letzte Woche umgezogen."),
    ("de", "bitte kündigen Sie mein Abo"),
    # French
    ("fr", "Où est mon colis ? Il devait arriver hier."),
    ("fr", "comment réinitialiser mon mot de passe"),
    ("fr", "J'ai été débité deux fois pour la commande 48213, merci de rembourser le second paiement."),
    ("fr", "L'application plante dès que j'ouvre la page des paramètres sur mon téléphone."),
    ("fr", "Est-ce que je peux changer l'adresse de livraison après l'expédition de la commande ? J'ai "
           "déménagé la semaine dernière."),
    ("fr", "je veux résilier mon abonnement"),
    # Spanish
    ("es", "¿Dónde está mi paquete? Tenía que llegar ayer."),
    ("es", "cómo puedo restablecer mi contraseña"),
    ("es", "Me cobraron dos veces el pedido 48213, por favor devuelvan el segundo pago."),
    ("es", "La aplicación se cierra cada vez que abro la página de ajustes en mi móvil."),
    ("es", "¿Puedo cambiar la dirección de entrega después de que se haya enviado el pedido? Me mudé la "
           "semana pasada."),
    ("es", "quiero cancelar mi suscripción"),
    # Italian
    ("it", "Dov'è il mio pacco? Doveva arrivare ieri."),
    ("it", "come posso reimpostare la mia password"),
    ("it", "Mi è stato addebitato due volte l'ordine 48213, per favore rimborsate il secondo pagamento."),
    ("it", "L'app si blocca ogni volta che apro la pagina delle impostazioni sul telefono."),
    ("it", "Posso cambiare l'indirizzo di consegna dopo che l'ordine è stato spedito? Mi sono trasferito "
           "la settimana scorsa."),
    ("it", "voglio disdire il mio abbonamento"),
    # Portuguese
    ("pt", "Onde está a minha encomenda? Devia ter chegado ontem."),
    ("pt", "como faço para redefinir minha senha"),
    ("pt", "Fui cobrado duas vezes pelo pedido 48213, por favor devolvam o segundo pagamento."),
    ("pt", "O aplicativo fecha sozinho sempre que abro a página de configurações no meu celular."),
    ("pt", "Posso mudar o endereço de entrega depois que o pedido foi enviado? Eu me mudei na semana "
           "passada."),
    ("pt", "quero cancelar a minha assinatura"),
    # Dutch
    ("nl", "Waar is mijn pakket? Het zou gisteren aankomen."),
    ("nl", "hoe kan ik mijn wachtwoord opnieuw instellen"),
    ("nl", "Bestelling 48213 is twee keer afgeschreven, wilt u de tweede betaling terugstorten?"),
    ("nl", "De app loopt vast zodra ik de instellingen open op mijn telefoon."),
    ("nl", "Kan ik het bezorgadres nog wijzigen nadat de bestelling is verzonden? Ik ben vorige week "
           "verhuisd."),
    ("nl", "ik wil mijn abonnement opzeggen"),
    # Polish
    ("pl", "Gdzie jest moja paczka? Miała dotrzeć wczoraj."),
    ("pl", "jak mogę zresetować hasło"),
    ("pl", "Za zamówienie 48213 pobrano opłatę dwa razy, proszę o zwrot drugiej płatności."),
    ("pl", "Aplikacja zawiesza się za każdym razem, gdy otwieram ustawienia w telefonie."),
    ("pl", "Czy mogę zmienić adres dostawy po wysłaniu zamówienia? W zeszłym tygodniu się przeprowadziłem."),
    ("pl", "chcę anulować subskrypcję"),
    # Russian
    ("ru", "Где моя посылка? Она должна была прийти вчера."),
    ("ru", "как сбросить пароль"),
    ("ru", "С меня дважды списали деньги за заказ 48213, верните, пожалуйста, второй платёж."),
    ("ru", "Приложение вылетает каждый раз, когда я открываю настройки на телефоне."),
    ("ru", "Можно ли изменить адрес доставки после отправки заказа? Я переехал на прошлой неделе."),
    ("ru", "хочу отменить подписку"),
    # Turkish
    ("tr", "Kargom nerede? Dün gelmesi gerekiyordu."),
    ("tr", "şifremi nasıl sıfırlayabilirim"),
    ("tr", "48213 numaralı sipariş için iki kez ücret alındı, lütfen ikinci ödemeyi iade edin."),
    ("tr", "Telefonumda ayarlar sayfasını her açtığımda uygulama kapanıyor."),
    ("tr", "Sipariş kargoya verildikten sonra teslimat adresini değiştirebilir miyim? Geçen hafta taşındım."),
    ("tr", "aboneliğimi iptal etmek istiyorum"),
    # Japanese
    ("ja", "荷物はどこですか？昨日届く予定でした。"),
    ("ja", "パスワードをリセットする方法を教えてください"),
    ("ja", "注文48213の代金が二重に請求されました。二回目の支払いを返金してください。"),
    ("ja", "設定画面を開くたびにアプリが落ちます。"),
    ("ja", "発送後に配送先の住所を変更できますか？先週引っ越しました。"),
    ("ja", "サブスクリプションを解約したいです"),
    # Chinese
    ("zh", "我的包裹在哪里？应该昨天就到了。"),
    ("zh", "怎么重置我的密码"),
    ("zh", "订单48213被扣了两次款，请退还第二笔付款。"),
    ("zh", "每次打开设置页面应用就会闪退。"),
    ("zh", "订单发货以后还能修改收货地址吗？我上周搬家了。"),
    ("zh", "我想取消订阅"),
]

# Inputs with no language to name: each must give "und", never a guess.
UNDETERMINED: list[tuple[str, str]] = [
    ("too short", "ok"),
    ("too short", "hi!"),
    ("too short", "Danke"),
    ("numbers", "48213 48214 48215"),
    ("emoji only", "👍👍👍 🙏"),
    ("emoji only", "😡😡😡😡😡"),
    ("punctuation", "???!!! ..."),
    ("url", "https://shop.example.com/orders/48213?ref=mail"),
    ("json", '{"order_id": 48213, "status": "shipped", "items": [1, 2, 3]}'),
    ("code", "def refund(order):\n    return api.post(f'/orders/{order.id}/refund')"),
    ("code", "SELECT id, status FROM orders WHERE id = 48213;"),
    ("code", "for (let i = 0; i < items.length; i++) { total += items[i].price; }"),
    ("mixed scripts", "мой заказ 注文 order 48213 パッケージ"),
    ("mixed scripts", "Ich habe 注文番号48213 но посылки нет"),
]
